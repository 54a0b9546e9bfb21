# The CAE attentive-probing recipe on two 8-GPU nodes: 16 x 512 = 8192, the published batch.
_base_ = ["vit-base-p16_attentive_32xb256-amp-90e_in1k.py"]
train_dataloader = dict(batch_size=512)
