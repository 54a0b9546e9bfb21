# SdAE ViT-micro on the real-image mini suite's pretraining set (the union of its train
# splits, unlabelled; pretrain/data/real_suite.py): the small-scale reproduction's model
# and recipe with 8 px patches at 64 px (the same 64 tokens: 16 visible, 3 folds of 16),
# and the published teacher at any run length - 300 EMA updates with the published
# momenta 0.96 -> 0.99, spread over the run (TeacherEMAHook interval='count').
_base_ = ["../reproduction/sdae_vit-micro-p4_1xb128-6e_real32.py"]
data_root = "data/realsuite/pretrain"
model = dict(arch="micro-p8", img_size=64)
train_dataloader = dict(dataset=dict(data_root=data_root, img_size=64))
custom_hooks = [dict(type="TeacherEMAHook", interval="count", num_updates=300, momentum=0.96, final_momentum=0.99)]
max_epochs = 30
warmup_epochs = 3
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
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
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
