# The published recipe (sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py) reading
# ImageNet from webdataset shards instead of 1.28 M files: pack them once with
#   python tools/pack_shards.py /data/imagenet /data/imagenet-shards --split train
# and point `manifest` there (--cfg-options train_dataloader.dataset.manifest=...).
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
train_dataloader = dict(
    sampler=None,  # an IterableDataset splits the epoch over ranks and workers itself
    dataset=dict(
        _delete_=True,
        type="ShardedPretrainDataset",
        manifest="data/imagenet-shards/train-manifest.json",
        img_size=224,
        crop_scale=(0.2, 1.0),
        hflip=True,
        shuffle_buffer=2000,
    ),
)
# Gives the dataset the run's seed, the loader's batch size and each epoch (DistSamplerSeedHook's job).
default_hooks = dict(sampler_seed=dict(type="ShardedDataHook"))
