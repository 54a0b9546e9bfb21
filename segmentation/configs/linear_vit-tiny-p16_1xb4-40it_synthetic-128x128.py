# The linear recipe's code paths on the generated data (tools/generate_datasets.py ade20k):
# ViT-tiny (taps after blocks 9-12, the head reads the last), 128x128 crops, slide
# inference, one CPU process, 40 iterations. Only size/schedule keys differ from the recipe.
_base_ = ["linear_vit-b16_8xb2-40k_ade20k-512x512.py"]
crop_size = (128, 128)
width = 192  # ViT-tiny
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128),
    decode_head=dict(in_channels=[width], channels=width),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
)
data_root = "data/synthetic_ade/ADEChallengeData2016"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(99999999, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(99999999, 128), keep_ratio=True),
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
    num_workers=2, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
max_iters = 40
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=2),  # 40 x 1500 / 40000
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=2, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
