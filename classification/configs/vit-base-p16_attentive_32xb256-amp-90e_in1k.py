# CAE-protocol attentive probing of a ViT-B/16 canonical backbone on ImageNet-1k, as
# published: 32 GPUs x 256 = 8192, mixed precision (CAE: fp16 with a loss scaler; bf16
# here, as the suite's other recipes, needs none).
#   bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors   (on each of 4 nodes)
# Augmentation (CAE: --color_jitter 0 --aa '' --reprob 0 --mixup 0 --cutmix 0): random
# resized crop + flip, as the linear-probing transform; evaluation resizes to 256 and
# center-crops 224.
_base_ = [
    "_base_/models/vit-base-p16_attentive.py",
    "_base_/datasets/imagenet_linprobe.py",
    "_base_/schedules/attentive_sgd_90e.py",
    "_base_/default_runtime.py",
]
train_dataloader = dict(batch_size=256)
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
