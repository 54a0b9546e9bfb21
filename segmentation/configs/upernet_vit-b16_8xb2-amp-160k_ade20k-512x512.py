# UperNet ViT-B/16 on ADE20K, 512x512 crops, 8 GPUs x 2 = 16, 160k iterations, bf16:
#   bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors --cfg-options data_root=...
_base_ = [
    "_base_/models/upernet_vit-b16.py",
    "_base_/datasets/ade20k.py",
    "_base_/schedules/adamw_ld0.65_poly_160k.py",
    "_base_/default_runtime.py",
]
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
