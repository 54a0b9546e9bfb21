# ImageNet-1k in its folder layout, read once, in order, with the evaluation transform
# (short side to 256, bicubic; center crop 224; ImageNet mean/std) - the transform of
# DINO's eval_knn.py and of MSN's / DINOv2's logistic regression - for the frozen-feature
# probes of tools/eval_features.py (k-NN, low-shot). Both splits are cached per backbone.
data_root = "data/imagenet"
train_dataloader = dict(
    batch_size=256,
    num_workers=10,
    persistent_workers=False,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="default_collate"),
    dataset=dict(type="ImageNetClassification", data_root=data_root, split="train", transform="eval", img_size=224),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=10,
    persistent_workers=False,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="default_collate"),
    dataset=dict(type="ImageNetClassification", data_root=data_root, split="val", transform="eval", img_size=224),
)
randomness = dict(seed=0)
