# The tiny demo config reading the generated data from shards:
#   python tools/generate_datasets.py imagenet data/synthetic_imagenet
#   python tools/pack_shards.py data/synthetic_imagenet data/synthetic_imagenet-shards --shard-size 40
_base_ = ["sdae_vit-tiny-p16_1xb32-10e_synthetic.py"]
train_dataloader = dict(
    sampler=None,  # an IterableDataset splits the epoch over ranks and workers itself
    dataset=dict(
        _delete_=True,
        type="ShardedPretrainDataset",
        manifest="data/synthetic_imagenet-shards/train-manifest.json",
        img_size=96,
        crop_scale=(0.2, 1.0),
        hflip=True,
        shuffle_buffer=200,
    ),
)
# Gives the dataset the run's seed, the loader's batch size and each epoch (DistSamplerSeedHook's job).
default_hooks = dict(sampler_seed=dict(type="ShardedDataHook"))
