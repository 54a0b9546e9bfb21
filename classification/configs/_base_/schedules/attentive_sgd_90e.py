# CAE attentive probing (Atten4Vis/CAE scripts/cae_base_800e.sh, tools/run_attentive.py):
# SGD (momentum 0.9, wd 0, no gradient clipping), lr 0.4 at the published batch of
# 32 GPUs x 256 = 8192, i.e. 0.0125 x batch / 256; 10 warm-up epochs from 0, then
# half-cosine to 1e-6, per iteration; 90 epochs; cross-entropy without label smoothing.
lr_scaling = dict(base_lr=0.4 * 256 / 8192, base_batch_size=256)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=0.4, momentum=0.9, weight_decay=0.0),
)
max_epochs = 90
warmup_epochs = 10
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
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
