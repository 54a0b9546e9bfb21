# ImageNet-1k in its folder layout: <root>/{train,val}/<wnid>/<image>.
data_root = "data/imagenet"
train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # Mixup/CutMix pair images within a batch
    # DefaultSampler's order; skips trained batches on a mid-epoch resume.
    sampler=dict(type="ResumableSampler", shuffle=True),
    collate_fn=dict(type="default_collate"),
    dataset=dict(type="ImageNetClassification", data_root=data_root, split="train", transform="finetune", img_size=224),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="default_collate"),
    dataset=dict(type="ImageNetClassification", data_root=data_root, split="val", transform="eval", img_size=224),
)
val_evaluator = dict(type="TopKAccuracy", topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
