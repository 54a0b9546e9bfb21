# ADE20K in its official layout: <data_root>/ADEChallengeData2016/{images,annotations}/{training,validation}.
# mmseg's ADE20KDataset that refuses, before training, label maps of the wrong size or mode
dataset_type = "CheckedADE20KDataset"
data_root = "data/ade"
crop_size = (512, 512)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root + "/ADEChallengeData2016",
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root + "/ADEChallengeData2016",
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
# Multi-scale + flip test (tools/test.py --tta), the ADE20K "ms" protocol of BEiT, which MAE
# and CAE reuse (microsoft/unilm beit/semantic_segmentation/configs/beit/upernet/
# upernet_beit_base_12_512_slide_160k_ade20k_ms.py): the test scale (2048, 512) times each
# ratio, with SETR's rule (SETR_Resize, setr_multi_scale=True) that the short side never
# falls below the crop and the long side is not capped - so ratios 0.5 and 0.75 test at the
# short side of 1.0 -, each scale as is and flipped. mmseg's SegTTAModel (tta_model in
# default_runtime.py) averages the softmax of the 12 passes at the original size.
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_uncapped = 2**31  # no long-side limit, as SETR_Resize
tta_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(
        type="TestTimeAug",
        transforms=[
            [
                dict(type="ResizeShortestEdge", scale=max(int(512 * r), crop_size[0]), max_size=tta_uncapped)
                for r in tta_ratios
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
