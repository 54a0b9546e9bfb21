# 16 GPUs (2 nodes x 8), the same effective batch 1024 with 64 per GPU.
_base_ = ["vit-base-p16_finetune_8xb128-amp-100e_in1k.py"]
train_dataloader = dict(batch_size=64)
