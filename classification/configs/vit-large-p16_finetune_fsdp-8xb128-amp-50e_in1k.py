# MAE-protocol fine-tuning of a ViT-L/16 canonical backbone on ImageNet-1k with FSDP2,
# 8 GPUs x 128 = 1024, bf16:  bash tools/dist_train.sh THIS 8 --backbone FILE.safetensors
# (the encoder comes from the backbone file, which must be a ViT-L/16, e.g. from
# pretrain/configs/sdae_vit-large-p16_fsdp-8xb96-amp-coslr-300e_in1k.py; another size is refused).
# MAE's ViT-L recipe where it differs from ViT-B: 50 epochs (5 warm-up), base lr 1e-3,
# layer decay 0.75, drop path 0.2; AdamW, wd 0.05, mixup/cutmix, label smoothing as ViT-B.
_base_ = ["vit-base-p16_finetune_8xb128-amp-100e_in1k.py"]
model = dict(backbone=dict(drop_path_rate=0.2, expect=dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)))
lr_scaling = dict(base_lr=1e-3, base_batch_size=256)
# bf16 without a loss scaler: FullyShardStrategy refuses dynamic loss scaling.
optim_wrapper = dict(
    loss_scale=dict(enabled=False),
    optimizer=dict(lr=1e-3 * 1024 / 256),
    paramwise_cfg=dict(layer_decay=0.75),
)
max_epochs = 50
warmup_epochs = 5
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(
        type="CosineAnnealingLR",
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-6,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
# FlexibleRunner + FullyShardStrategy (pretrain/engine/fsdp.py): each of the 24 encoder
# blocks is its own FSDP unit, embeddings, norm and head one more.
runner_type = "FlexibleRunner"
strategy = dict(type="FullyShardStrategy", unit_types=["Block"])
