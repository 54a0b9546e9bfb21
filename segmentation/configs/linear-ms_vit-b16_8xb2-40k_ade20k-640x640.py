# DINOv2's "+ms" ADE20K linear protocol (DINOv2 paper: "we concatenate the patch tokens
# of the 4 last layers, use a larger image resolution of 640, and use multiscale test-time
# augmentations"; released config dinov2_vitb14_ade20k_ms_config.py): the linear recipe
# with the last 4 blocks' final-normed patch tokens concatenated (4 x 768 channels, in
# block order), 640x640 crops from images resized to 1-3x a 640 short side, slide test
# 640 / 320. Its published number is the multi-scale + flip test of the trained head:
#   python tools/test.py THIS CHECKPOINT --backbone FILE.safetensors --tta
# (short side 640 x 1.0, 1.32, 1.73, 2.28, 3.0, each also flipped); training validates
# single-scale.
_base_ = ["linear_vit-b16_8xb2-40k_ade20k-512x512.py"]
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=640),
    decode_head=dict(in_channels=[768] * 4, in_index=[0, 1, 2, 3], channels=768 * 4),
    test_cfg=dict(crop_size=crop_size, stride=(320, 320)),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(99999999, 640), ratio_range=(1.0, 3.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(99999999, 640), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
tta_ratios = [1.0, 1.32, 1.73, 2.28, 3.0]
tta_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(
        type="TestTimeAug",
        transforms=[
            [dict(type="ResizeShortestEdge", scale=int(640 * r), max_size=2**31) for r in tta_ratios],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="LoadAnnotations", reduce_zero_label=True)],
            [dict(type="PackSegInputs")],
        ],
    ),
]
