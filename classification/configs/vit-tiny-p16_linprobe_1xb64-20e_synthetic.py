# Linear probing on the generated ImageNet-layout data: the ViT-B recipe's
# pipeline at tiny scale, CPU, fp32.
_base_ = [
    "_base_/models/vit-base-p16_linprobe.py",
    "_base_/datasets/imagenet_linprobe.py",
    "_base_/schedules/linprobe_lars_90e.py",
    "_base_/default_runtime.py",
]
num_classes = 8
data_root = "data/synthetic_imagenet"
model = dict(num_classes=num_classes, backbone=dict(img_size=96), data_preprocessor=dict(num_classes=num_classes))
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, img_size=96),
)
val_dataloader = dict(
    batch_size=40,
    num_workers=2,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, img_size=96),
)
test_dataloader = val_dataloader
# LARS moves each weight by about lr x 1e-3 of its norm per step: the recipe's
# base lr (0.1 per 256) needs ImageNet's ~100k steps. With 100 steps here the
# base lr is raised so that the probe can move at all.
lr_scaling = dict(base_lr=20.0, base_batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=20.0 * 64 / 256))
max_epochs = 20
warmup_epochs = 2
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(
        type="CosineAnnealingLR",
        T_max=max_epochs - warmup_epochs,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=5))
