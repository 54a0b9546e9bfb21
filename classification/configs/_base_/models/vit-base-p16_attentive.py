# CAE attentive probing on any canonical backbone file (tools/train.py --backbone FILE):
# a cross-attention block with a learnable query over the frozen encoder's output
# tokens, BatchNorm without affine, linear head (classification/attentive.py).
num_classes = 1000
model = dict(
    type="ViTClassifier",
    num_classes=num_classes,
    head="attentive",
    backbone=dict(checkpoint=None, img_size=224),
    data_preprocessor=dict(type="MixupDataPreprocessor", num_classes=num_classes, mixup=None),
)
