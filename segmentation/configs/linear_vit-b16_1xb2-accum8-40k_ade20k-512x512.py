# DINOv2's ADE20K linear protocol on one GPU: the same effective batch 16 by accumulating
# 8 steps, the schedule in the same number of optimizer steps. SyncBN acts as BN in one process.
_base_ = ["linear_vit-b16_8xb2-40k_ade20k-512x512.py"]
optim_wrapper = dict(accumulative_counts=8)
train_cfg = dict(max_iters=40000 * 8, val_interval=10000 * 8)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500 * 8),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500 * 8, end=40000 * 8),
]
default_hooks = dict(checkpoint=dict(interval=10000 * 8))
