# The ADE20K pipeline on the generated data (tools/generate_datasets.py ade20k):
# ViT-tiny, 128x128 crops, slide inference, CPU-friendly sizes, plain BN.
_base_ = [
    "_base_/models/upernet_vit-b16.py",
    "_base_/datasets/ade20k.py",
    "_base_/schedules/adamw_ld0.65_poly_160k.py",
    "_base_/default_runtime.py",
]
crop_size = (128, 128)
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128, norm="BN"),
    decode_head=dict(in_channels=[192] * 4, channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=192, channels=32, norm_cfg=norm_cfg),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(85, 85)),
)
data_root = "data/synthetic_ade/ADEChallengeData2016"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(512, 128), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
tta_pipeline = [  # the multi-scale + flip test at this resolution: short sides max(128 r, 128)
    dict(type="LoadImageFromFile"),
    dict(
        type="TestTimeAug",
        transforms=[
            [
                dict(type="ResizeShortestEdge", scale=max(int(128 * r), crop_size[0]), max_size=2**31)
                for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
            ],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="LoadAnnotations", reduce_zero_label=True)],
            [dict(type="PackSegInputs")],
        ],
    ),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_iters = 40
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=5),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=5, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters))
