# MAE linear probing: LARS (momentum 0.9, wd 0, trust ratio on weights only),
# lr = 0.1 x batch / 256, 10 warm-up epochs then half-cosine to 0.
lr_scaling = dict(base_lr=0.1, base_batch_size=256)
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="LarsOptimWrapperConstructor",
    optimizer=dict(type="Lars", lr=0.1 * 16384 / 256, momentum=0.9, weight_decay=0.0),
)
max_epochs = 90
warmup_epochs = 10
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
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
