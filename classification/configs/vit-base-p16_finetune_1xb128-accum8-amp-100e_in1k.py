# One GPU, effective batch 1024 by accumulating 8 steps.
_base_ = ["vit-base-p16_finetune_8xb128-amp-100e_in1k.py"]
optim_wrapper = dict(accumulative_counts=8)
