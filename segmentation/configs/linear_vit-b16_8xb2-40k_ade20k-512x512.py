# DINOv2's ADE20K linear protocol ("lin." in the DINOv2 paper; its released config
# dinov2_vitb14_ade20k_linear_config.py, head dinov2/eval/segmentation/models/decode_heads/
# linear_head.py) on a frozen ViT-B/16: the patch tokens of the last block after the
# encoder's final norm (taps after blocks 9-12, the head reads the last), BatchNorm + 1x1
# conv (segmentation/linear_head.py) at 1/16 resolution, logits upsampled bilinearly.
# 512x512 crops, 8 GPUs x 2 = 16, 40k iterations, AdamW lr 1e-3 (absolute), wd 1e-4,
# 1500 linear warm-up iterations then poly to 0, fp32, slide test 512 / 341:
#   bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors --cfg-options ...data_root=...
# The encoder keeps per-block relative position bias (zero, hence exact, for MAE / CAE
# files; BEiT's own tables) so that every canonical file loads; frozen, it never changes.
_base_ = ["_base_/datasets/ade20k.py", "_base_/default_runtime.py"]
crop_size = (512, 512)
norm_cfg = dict(type="SyncBN", requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="DenseViT",
        checkpoint=None,  # tools/train.py --backbone FILE.safetensors
        img_size=512,
        out_indices=(8, 9, 10, 11),
        rel_pos_bias="per_block",
        layer_scale_init=None,
        drop_path_rate=0.0,
        pyramid=False,
        final_norm=True,
        frozen=True,
    ),
    decode_head=dict(
        type="LinearHead",
        in_channels=[768],
        in_index=[3],  # the last block; linear-ms reads all four
        channels=768,
        dropout_ratio=0.0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)
# DINOv2 resizes by the short side only (img_scale (99999999, 512)): no long-side cap
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(99999999, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(99999999, 512), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="TrainableOptimWrapperConstructor",  # leaves the frozen encoder out
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    # a no-op rule (DINOv2 decays every parameter): without any, mmengine's constructor
    # hands the optimizer model.parameters() whole, frozen encoder included
    paramwise_cfg=dict(norm_decay_mult=1.0),
)
max_iters = 40000
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=10000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(checkpoint=dict(interval=10000))
