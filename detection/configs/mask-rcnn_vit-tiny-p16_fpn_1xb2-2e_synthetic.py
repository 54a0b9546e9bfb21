# The COCO pipeline on the generated data (tools/generate_datasets.py coco):
# ViT-tiny, small scales, BN, CPU. Same model, heads, losses and metric.
_base_ = [
    "_base_/models/mask-rcnn_vit-b16_fpn.py",
    "_base_/datasets/coco_instance_detr-aug.py",
    "_base_/schedules/adamw_ld0.75_1x.py",
    "_base_/default_runtime.py",
]
classes = ("box", "disc", "triangle")
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    backbone=dict(img_size=128, norm="BN"),
    neck=dict(in_channels=[192] * 4, out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        mask_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, conv_out_channels=64, fc_out_channels=128, num_classes=3, norm_cfg=norm_cfg),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3),
    ),
    # fewer sampled anchors / RoIs: CPU-sized, same assigners and losses
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))),
    # keep every detection: after a few CPU iterations scores are still low, and
    # COCO AP ranks detections anyway (the ViT-B recipe keeps mmdet's 0.05)
    test_cfg=dict(rcnn=dict(score_thr=0.0)),
)
data_root = "data/synthetic_coco/"
small_scales = [(320, s) for s in range(128, 193, 32)]
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(
        type="RandomChoice",
        transforms=[
            [dict(type="RandomChoiceResize", scales=small_scales, keep_ratio=True)],
            [
                dict(type="RandomChoiceResize", scales=[(320, 112), (320, 128)], keep_ratio=True),
                dict(type="RandomCrop", crop_type="absolute_range", crop_size=(96, 128), allow_negative_crop=True),
                dict(type="RandomChoiceResize", scales=small_scales, keep_ratio=True),
            ],
        ],
    ),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(320, 160), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
train_dataloader = dict(
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=train_pipeline,
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
    ),
)
val_dataloader = dict(
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_val2017.json")
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_epochs = 2
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=5),
    dict(type="MultiStepLR", begin=0, end=max_epochs, by_epoch=True, milestones=[1], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=max_epochs))
