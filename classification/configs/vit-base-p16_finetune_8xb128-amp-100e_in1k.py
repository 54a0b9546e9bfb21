# MAE-protocol fine-tuning of a ViT-B/16 canonical backbone on ImageNet-1k,
# 8 GPUs x 128 = 1024, bf16:  bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors
_base_ = [
    "_base_/models/vit-base-p16_finetune.py",
    "_base_/datasets/imagenet_finetune.py",
    "_base_/schedules/finetune_adamw_ld0.65_100e.py",
    "_base_/default_runtime.py",
]
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
