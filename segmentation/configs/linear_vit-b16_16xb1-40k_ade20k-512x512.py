# DINOv2's ADE20K linear protocol on 16 GPUs (2 nodes x 8): the same effective batch 16 with
# one crop per GPU; SyncBN normalises over all 16 crops, as over 8 x 2.
_base_ = ["linear_vit-b16_8xb2-40k_ade20k-512x512.py"]
train_dataloader = dict(batch_size=1)
