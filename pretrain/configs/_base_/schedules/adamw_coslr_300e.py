# AdamW (0.9, 0.95), wd 0.04 except biases and norms, 60 warm-up epochs then
# half-cosine to 0, all per iteration; lr = base_lr * effective batch / 256.
# tools/train.py recomputes optimizer.lr from `lr_scaling` and the actual
# effective batch (GPUs x batch per GPU x accumulation); set lr_scaling = None
# to use optimizer.lr as an absolute value.
lr_scaling = dict(base_lr=2.666e-4, base_batch_size=256)
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="TrainableOptimWrapperConstructor",  # leaves the EMA teacher out
    optimizer=dict(type="AdamW", lr=2.666e-4 * 768 / 256, betas=(0.9, 0.95), weight_decay=0.04),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
)
max_epochs = 300
warmup_epochs = 60
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
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs)
