# MAE-protocol linear probing of a ViT-B/16 canonical backbone on ImageNet-1k,
# 8 GPUs x 2048 = 16384, bf16:  bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors
_base_ = [
    "_base_/models/vit-base-p16_linprobe.py",
    "_base_/datasets/imagenet_linprobe.py",
    "_base_/schedules/linprobe_lars_90e.py",
    "_base_/default_runtime.py",
]
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
