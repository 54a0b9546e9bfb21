# 16 GPUs (2 nodes x 8), the same effective batch 16384 with 1024 per GPU.
_base_ = ["vit-base-p16_linprobe_8xb2048-amp-90e_in1k.py"]
train_dataloader = dict(batch_size=1024)
