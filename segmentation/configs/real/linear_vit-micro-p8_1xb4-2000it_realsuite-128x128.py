# DINOv2's ADE20K linear recipe (frozen encoder, final-normed patch tokens of the last block,
# BatchNorm + 1x1 conv, AdamW lr 1e-3 wd 1e-4, warm-up then poly, DINOv2's pipeline) shrunk
# for the real-image mini suite (tools/run_suite.py --preset real): a ViT-micro backbone
# (patch 8, 4 blocks: the 4 taps are all of them, the head reads the last), 128 px crops of
# the material mosaics in the ADE20K layout (pretrain/data/real_suite.py), one process, and
# the recipe's passes over its training set: 40k x 16 / 20,210 images = 32 epochs, here
# 2000 x 4 / 240 = 33, with the recipe's share of warm-up (1500 / 40k). Every pixel size is the
# recipe's divided by 4 (512 -> 128 px crops and short side; slide stride 341 -> 85; the
# multi-scale test's short sides max(128 r, 128)). Only size/schedule keys change
# (tests/test_real_suite.py's list). The head predicts the 8 materials (label k + 1 is
# material k under an ADE name).
_base_ = ["../linear_vit-b16_8xb2-40k_ade20k-512x512.py"]
crop_size = (128, 128)
num_classes = 8
width = 128  # ViT-micro
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128, out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=[width], channels=width, num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
)
data_root = "data/realsuite/ade/ADEChallengeData2016"
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
tta_pipeline = [
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
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
max_iters = 2000
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=75),  # 2000 x 1500 / 40000
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=75, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
