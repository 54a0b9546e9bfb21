# SdAE ViT-B/16, 100 epochs (paper Table 2 / Table 5 ablations); warm-up 0.2 x epochs.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
max_epochs = 100
warmup_epochs = 20
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(
        type="CosineAnnealingLR",
        T_max=max_epochs - warmup_epochs,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
train_cfg = dict(max_epochs=max_epochs)
