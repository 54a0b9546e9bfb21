# 8 GPUs, the same effective batch 32 by accumulating 2 steps. The 500 warm-up
# steps become 1000 iterations (warm-up counts iterations, not optimizer steps).
_base_ = ["mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py"]
optim_wrapper = dict(accumulative_counts=2)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500 * 2),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
