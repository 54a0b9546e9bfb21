# The ViT-B attentive-probing recipe (CAE protocol: a learnable query cross-attends to
# the frozen encoder's tokens, BatchNorm without affine, linear head, SGD) shrunk for
# the real-image mini suite (tools/run_suite.py --preset real): a ViT-micro (patch 8)
# backbone at 64 px on the 8-material classification set, one process, a short
# schedule. Only size/schedule keys change (tests/test_attentive.py).
_base_ = ["../vit-base-p16_attentive_32xb256-amp-90e_in1k.py"]
num_classes = 8
data_root = "data/realsuite/imagenet"
model = dict(num_classes=num_classes, backbone=dict(img_size=64), data_preprocessor=dict(num_classes=num_classes))
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, img_size=64),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False, pin_memory=False, dataset=dict(data_root=data_root, img_size=64)
)
test_dataloader = val_dataloader
# The recipe's lr (0.0125 per 256) is sized for ImageNet's ~14k steps; these 150
# steps need a larger one to move the probe at all.
lr_scaling = dict(base_lr=0.5, base_batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=0.5 * 128 / 256))
max_epochs = 30
warmup_epochs = 3
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(
        type="CosineAnnealingLR",
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-6,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
