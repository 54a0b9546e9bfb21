# MAE fine-tuning head on any canonical backbone file (tools/train.py --backbone FILE).
num_classes = 1000
model = dict(
    type="ViTClassifier",
    num_classes=num_classes,
    head="finetune",
    backbone=dict(checkpoint=None, img_size=224, drop_path_rate=0.1),
    data_preprocessor=dict(
        type="MixupDataPreprocessor",
        num_classes=num_classes,
        mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", label_smoothing=0.1),
    ),
)
