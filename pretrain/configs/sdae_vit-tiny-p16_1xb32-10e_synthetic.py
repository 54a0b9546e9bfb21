# ViT-tiny SdAE on the generated ImageNet-layout data (tools/generate_datasets.py
# imagenet): the README's demo and the tests. Same code paths as the ViT-B
# recipe; 96 px images give 36 patches: 9 visible, 27 masked = 3 folds of 9.
_base_ = [
    "_base_/models/sdae_vit-base-p16.py",
    "_base_/datasets/imagenet_pretrain.py",
    "_base_/schedules/adamw_coslr_300e.py",
    "_base_/pretrain_runtime.py",
]
data_root = "data/synthetic_imagenet"
model = dict(
    arch="tiny",
    img_size=96,
    drop_path_rate=0.1,
    decoder=dict(embed_dim=128, depth=2, num_heads=4),
    teacher_input=dict(kind="multi_fold", num_tokens=27, num_folds=3),
)
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, img_size=96),
)
# A tiny model on a few hundred images needs a larger step than ViT-B on ImageNet.
lr_scaling = dict(base_lr=1.5e-3, base_batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=1.5e-3 * 32 / 256))
max_epochs = 10
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
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=5))
