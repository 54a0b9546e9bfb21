# One GPU, the same effective batch 16 by accumulating 8 steps (BEiT lost about 5 mIoU
# at the smaller batch). SyncBN acts as BN in a single process.
_base_ = ["upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py"]
optim_wrapper = dict(accumulative_counts=8)
train_cfg = dict(max_iters=160000 * 8, val_interval=16000 * 8)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500 * 8),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500 * 8, end=160000 * 8),
]
default_hooks = dict(checkpoint=dict(interval=16000 * 8))
