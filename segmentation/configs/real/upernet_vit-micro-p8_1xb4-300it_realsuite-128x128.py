# The ViT-B UperNet recipe (BEiT/MAE/CAE protocol: dense ViT with per-block relative
# position bias and layer scale, taps into the 4-level pyramid, UperNet + auxiliary FCN,
# AdamW with layer decay 0.65, poly schedule, the ADE20K pipeline) shrunk for the
# real-image mini suite (tools/run_suite.py --preset real): a ViT-micro backbone (patch 8,
# 4 blocks, so the pyramid's strides are 2-16 instead of 4-32), 128 px crops of the
# material mosaics in the ADE20K layout (pretrain/data/real_suite.py), narrower heads,
# one process, a short schedule. Every pixel size is the recipe's divided by 4 (512 ->
# 128 px crops; 2048 x 512 -> 512 x 128 resize; slide stride 341 -> 85; the multi-scale
# test's short sides max(128 r, 128)). Only
# size/schedule keys change (tests/test_real_suite.py checks the list). The heads predict
# the 8 materials; ADE20KDataset keeps its class list, so label k + 1 is material k under
# an ADE name (mIoU averages the classes present in labels or predictions).
_base_ = ["../upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py"]
crop_size = (128, 128)
num_classes = 8  # materials (the dataset keeps ADE20K's class list: label k + 1 is material k)
width, channels = 128, 64  # ViT-micro; UperNet width (recipe: 768, 768; auxiliary 256)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=128, out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=[width] * 4, channels=channels, num_classes=num_classes),
    auxiliary_head=dict(in_channels=width, channels=channels // 3, num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
)
data_root = "data/realsuite/ade/ADEChallengeData2016"
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
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
# a short run needs a larger step than the recipe's 1e-4
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_iters = 300
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=30),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
