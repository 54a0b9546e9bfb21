# One GPU, same effective batch 768 as the published 8 x 96 by accumulating 8 steps.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
optim_wrapper = dict(accumulative_counts=8)
