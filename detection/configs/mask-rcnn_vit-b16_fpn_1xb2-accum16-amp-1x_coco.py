# One GPU, the same effective batch 32 by accumulating 16 steps; activation
# checkpointing keeps 1333x800 inputs in memory. The 500 warm-up steps become
# 8000 iterations (warm-up counts iterations, not optimizer steps).
_base_ = ["mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py"]
model = dict(backbone=dict(with_cp=True))
optim_wrapper = dict(accumulative_counts=16)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500 * 16),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
