# MAE fine-tuning: AdamW (0.9, 0.999), wd 0.05 (none on 1-D params, pos-embed,
# cls token), layer-wise lr decay 0.65, lr = 5e-4 x batch / 256, 5 warm-up
# epochs then half-cosine to 1e-6, per iteration.
lr_scaling = dict(base_lr=5e-4, base_batch_size=256)
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="LayerDecayOptimWrapperConstructor",
    optimizer=dict(type="AdamW", lr=5e-4 * 1024 / 256, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay=0.65, backbone_prefix="backbone."),
)
max_epochs = 100
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
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
