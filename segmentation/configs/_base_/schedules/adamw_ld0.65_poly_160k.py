# AdamW (0.9, 0.999), wd 0.05, layer-wise lr decay 0.65 over the 12 blocks,
# 1500 linear warm-up iterations then poly (power 1) to 0 at 160k iterations.
# The lr is absolute for the total batch of 16. Default 1e-4, MAE's ADE20K value:
# SdAE's released code is an MAE fork; CAE used 3e-4 and BEiT 7e-4 - sweep with
#   --cfg-options optim_wrapper.optimizer.lr=3e-4
optim_wrapper = dict(
    type="OptimWrapper",
    constructor="LayerDecayOptimWrapperConstructor",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay=0.65, backbone_prefix="backbone.encoder."),
)
max_iters = 160000
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=16000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
