# Not a recipe of the paper: the learnability reference for the real preset's COCO-layout
# task (tools/benchmark_detection_learnability.py). The real preset's Mask R-CNN, data,
# pipelines, heads and schedule, with a ResNet-18 (GroupNorm, trained from scratch: no
# weights are read) in place of the ViT, a pyramid at the usual strides 4-32, and plain
# AdamW (layer decay is a ViT-block rule). If this learns the task in the budget and a
# ViT does not, the data, annotations, heads and evaluation are sound and the ViT's
# starting point is what decides.
_base_ = ["../mask-rcnn_vit-micro-p8_fpn_1xb1-4e_realsuite.py"]
strides = [4, 8, 16, 32]
model = dict(
    backbone=dict(
        _delete_=True,
        type="mmdet.ResNet",
        depth=18,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="GN", num_groups=16, requires_grad=True),
        norm_eval=False,
        style="pytorch",
        init_cfg=None,
    ),
    neck=dict(in_channels=[64, 128, 256, 512]),
    rpn_head=dict(anchor_generator=dict(strides=[*strides, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=strides, finest_scale=56),
        mask_roi_extractor=dict(featmap_strides=strides, finest_scale=56),
    ),
)
optim_wrapper = dict(_delete_=True, type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05))
