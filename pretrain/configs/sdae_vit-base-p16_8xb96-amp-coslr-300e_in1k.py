# The published SdAE recipe: ViT-B/16, ImageNet-1k, 300 epochs, 8 GPUs x 96 = 768.
_base_ = [
    "_base_/models/sdae_vit-base-p16.py",
    "_base_/datasets/imagenet_pretrain.py",
    "_base_/schedules/adamw_coslr_300e.py",
    "_base_/default_runtime.py",
]
# bf16 autocast (fp16 with dynamic loss scaling: tools/train.py --amp fp16).
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
