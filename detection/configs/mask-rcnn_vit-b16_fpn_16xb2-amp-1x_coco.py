# Mask R-CNN + FPN, ViT-B/16, COCO 2017, 16 GPUs x 2 = 32, 12 epochs, bf16:
#   bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors   (on each of 2 nodes; see README)
_base_ = [
    "_base_/models/mask-rcnn_vit-b16_fpn.py",
    "_base_/datasets/coco_instance_detr-aug.py",
    "_base_/schedules/adamw_ld0.75_1x.py",
    "_base_/default_runtime.py",
]
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
