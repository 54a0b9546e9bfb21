# One GPU, effective batch 16384 by accumulating 8 steps.
_base_ = ["vit-base-p16_linprobe_8xb2048-amp-90e_in1k.py"]
optim_wrapper = dict(accumulative_counts=8)
