# The CAE attentive-probing recipe on one GPU: 1 x 1024 x 8 accumulation steps = 8192,
# the published batch (the frozen encoder runs without gradients, so 1024 images fit).
_base_ = ["vit-base-p16_attentive_32xb256-amp-90e_in1k.py"]
train_dataloader = dict(batch_size=1024)
optim_wrapper = dict(accumulative_counts=8)
