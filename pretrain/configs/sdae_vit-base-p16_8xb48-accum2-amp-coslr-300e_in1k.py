# 8 smaller-memory GPUs (48 images each), effective batch 768 by accumulating 2 steps.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
train_dataloader = dict(batch_size=48)
optim_wrapper = dict(accumulative_counts=2)
