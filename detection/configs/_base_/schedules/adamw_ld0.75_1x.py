# CAE's "1x": 12 epochs, lr x0.1 at epochs 9 and 11, 500 linear warm-up
# iterations; AdamW lr 3e-4 (absolute, for the total batch of 32), wd 0.05,
# layer-wise lr decay 0.75 (the shared constructor).
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="LayerDecayOptimWrapperConstructor",
    optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay=0.75, backbone_prefix="backbone.encoder."),
)
max_epochs = 12
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
