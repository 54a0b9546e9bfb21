# Attentive probing (CAE protocol) on the generated ImageNet-layout data: the ViT-B
# recipe at tiny scale, CPU, fp32. Only size/schedule keys change (tests/test_attentive.py).
_base_ = ["vit-base-p16_attentive_32xb256-amp-90e_in1k.py"]
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
# The recipe's lr (0.0125 per 256) is sized for ImageNet's ~14k steps; these 100
# steps need a larger one to move the probe at all.
lr_scaling = dict(base_lr=0.5, base_batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=0.5 * 64 / 256))
max_epochs = 20
warmup_epochs = 2
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
default_hooks = dict(logger=dict(interval=5))
