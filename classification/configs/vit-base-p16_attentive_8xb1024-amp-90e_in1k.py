# The CAE attentive-probing recipe on one 8-GPU node: 8 x 1024 = 8192, the published batch.
_base_ = ["vit-base-p16_attentive_32xb256-amp-90e_in1k.py"]
train_dataloader = dict(batch_size=1024)
