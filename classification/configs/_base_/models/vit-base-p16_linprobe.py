# MAE linear probing on any canonical backbone file (tools/train.py --backbone FILE).
num_classes = 1000
model = dict(
    type="ViTClassifier",
    num_classes=num_classes,
    head="linear",
    backbone=dict(checkpoint=None, img_size=224),
    data_preprocessor=dict(type="MixupDataPreprocessor", num_classes=num_classes, mixup=None),
)
