# ImageNet-1k train split (labels unused); any folder of images works with subdir="".
data_root = "data/imagenet"
train_dataloader = dict(
    batch_size=96,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    # DefaultSampler's order; skips trained batches on a mid-epoch resume and seeds each sample's crop.
    sampler=dict(type="ResumableSampler", shuffle=True),
    collate_fn=dict(type="default_collate"),
    dataset=dict(
        type="PretrainImageDataset",
        data_root=data_root,
        subdir="train",
        img_size=224,
        crop_scale=(0.2, 1.0),
        hflip=True,
    ),
)
