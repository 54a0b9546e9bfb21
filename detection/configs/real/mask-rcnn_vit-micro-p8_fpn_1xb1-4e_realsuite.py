# The ViT-B Mask R-CNN + FPN recipe (CAE 1x protocol: dense ViT with layer scale 0.1,
# 4-level pyramid, FPN, 4conv1fc box head with GIoU, 4-conv mask head, AdamW with layer
# decay 0.75, DETR-style multi-scale + crop augmentation, 12 epochs with steps at 9
# and 11) shrunk for the real-image mini suite (tools/run_suite.py --preset real): a
# ViT-micro backbone (patch 8 instead of 16, so every feature stride and anchor stride is
# the recipe's divided by 2), 96 px scenes of digits, faces and coins in the COCO layout
# (pretrain/data/real_suite.py; image scales are the recipe's divided by 8), narrower
# heads, one process of one image per step. Only size/schedule keys change
# (tests/test_real_suite.py).
_base_ = ["../mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py"]
classes = ("digit", "face", "coin")
width, channels = 128, 32  # ViT-micro; FPN / head width (recipe: 768, 256)
strides = [2, 4, 8, 16]  # the pyramid of a patch-8 ViT (recipe: 4, 8, 16, 32)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(img_size=64, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[width] * 4, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels, anchor_generator=dict(strides=[*strides, 32])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels, featmap_strides=strides, finest_scale=28),
        mask_roi_extractor=dict(out_channels=channels, featmap_strides=strides, finest_scale=28),
        bbox_head=dict(in_channels=channels, conv_out_channels=channels, fc_out_channels=128, num_classes=3),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_classes=3),
    ),
    # proposals and sampled RoIs in proportion to ~100 px images with 1-3 objects
    # (recipe: 2000/1000 proposals, 256 anchors and 512 RoIs per ~1333 x 800 image)
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=64)),
    ),
    # keep every detection: after a short schedule the class scores are still low, and
    # COCO AP ranks detections anyway (the recipe keeps mmdet's 0.05)
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(score_thr=0.0)),
)
data_root = "data/realsuite/coco/"
multi_scale = [(167, s) for s in range(60, 101, 4)]
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(
        type="RandomChoice",
        transforms=[
            [dict(type="RandomChoiceResize", scales=multi_scale, keep_ratio=True)],
            [
                dict(type="RandomChoiceResize", scales=[(167, 50), (167, 62), (167, 75)], keep_ratio=True),
                dict(type="RandomCrop", crop_type="absolute_range", crop_size=(48, 75), allow_negative_crop=True),
                dict(type="RandomChoiceResize", scales=multi_scale, keep_ratio=True),
            ],
        ],
    ),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(167, 100), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
# One image per step (recipe: 2 per GPU). With 4 the RoI head of a ViT-micro learned
# nothing in 960 steps (box AP 0.0-0.7, random or MAE-pretrained, with or without GroupNorm
# in the FPN) while a ResNet-18 learned at 4 (README, detection learnability).
train_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        filter_cfg=dict(min_size=4),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_val2017.json")
test_evaluator = val_evaluator
# a short run needs a larger step than the recipe's 3e-4
optim_wrapper = dict(optimizer=dict(lr=2e-3))
max_epochs = 4
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type="MultiStepLR", begin=0, end=max_epochs, by_epoch=True, milestones=[3], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
