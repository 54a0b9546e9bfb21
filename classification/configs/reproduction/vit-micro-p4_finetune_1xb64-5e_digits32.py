# Short fine-tune of a ViT-micro backbone on the 32 px digits (tools/benchmark_reproduction.py;
# data: tools/generate_datasets.py real). The MAE recipe's model, optimiser (AdamW, layer
# decay) and head, shortened: 5 epochs (115 steps) are too few for Mixup/CutMix and
# RandAugment to pay off, so images are only resized (the eval transform) and the
# targets label-smoothed. A short run needs a larger step (base lr 1e-2 per 256) and
# a milder layer decay for a 4-block encoder (0.75).
_base_ = [
    "../_base_/models/vit-base-p16_finetune.py",
    "../_base_/datasets/imagenet_finetune.py",
    "../_base_/schedules/finetune_adamw_ld0.65_100e.py",
    "../_base_/default_runtime.py",
]
num_classes = 10
data_root = "data/real32/digits"
model = dict(
    num_classes=num_classes,
    label_smoothing=0.1,
    backbone=dict(img_size=32, drop_path_rate=0.0),
    data_preprocessor=dict(num_classes=num_classes, mixup=None),
)
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    drop_last=False,
    dataset=dict(data_root=data_root, transform="eval", img_size=32),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, img_size=32),
)
test_dataloader = val_dataloader
lr_scaling = dict(base_lr=1e-2, base_batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=1e-2 * 64 / 256), paramwise_cfg=dict(layer_decay=0.75))
max_epochs = 5
warmup_epochs = 1
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
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
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="Visualizer", vis_backends=vis_backends)
