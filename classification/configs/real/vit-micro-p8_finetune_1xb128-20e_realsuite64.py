# The ViT-B fine-tuning recipe (MAE protocol: AdamW, layer decay 0.65, Mixup/CutMix,
# RandAugment, random erasing, label smoothing) shrunk for the real-image mini suite
# (tools/run_suite.py --preset real): a ViT-micro (patch 8) backbone at 64 px on the 8-material
# classification set (pretrain/data/real_suite.py), one process, a short schedule.
# Only size/schedule keys change (tests/test_real_suite.py checks the list).
_base_ = ["../vit-base-p16_finetune_8xb128-amp-100e_in1k.py"]
num_classes = 8
data_root = "data/realsuite/imagenet"
model = dict(num_classes=num_classes, backbone=dict(img_size=64), data_preprocessor=dict(num_classes=num_classes))
train_dataloader = dict(
    num_workers=0, persistent_workers=False, pin_memory=False, dataset=dict(data_root=data_root, img_size=64)
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False, pin_memory=False, dataset=dict(data_root=data_root, img_size=64)
)
test_dataloader = val_dataloader
# The recipe's own learning rate (5e-4 per 256, scaled to the batch). A larger one (4e-3 per
# 256) trains a random init to the pretrained encoders' level in these 100 steps, and the task
# stops telling them apart (README, "Does it rank representations?").
max_epochs = 20
warmup_epochs = 2
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
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
