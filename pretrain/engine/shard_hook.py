"""The Runner's side of a training set read from shards (``ShardedDataset``)."""

from mmengine.dist import broadcast_object_list
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from pretrain.data.shard_dataset import ShardedDataset


@HOOKS.register_module()
class ShardedDataHook(Hook):
    """For a ``train_dataloader`` whose dataset is a :class:`ShardedDataset`: what
    ``DistSamplerSeedHook`` does for a sampler (an IterableDataset has none).

    * Before training: gives the dataset the run's seed (rank 0's, the same on
      every rank also with ``randomness.diff_rank_seed``; a ``seed`` set in the
      dataset's config wins) and the loader's batch size, so that every worker
      reads whole batches and ``len(dataloader)`` batches come out per epoch.
    * Before each epoch: the epoch's number (the dataset's order follows it).

    Use it in place of the default ``sampler_seed`` hook:
    ``default_hooks = dict(sampler_seed=dict(type="ShardedDataHook"))``.
    """

    priority = "NORMAL"

    def before_train(self, runner) -> None:
        loader = runner.train_loop.dataloader
        dataset = loader.dataset
        if not isinstance(dataset, ShardedDataset):
            raise TypeError(
                f"ShardedDataHook is for a train_dataloader reading shards (ShardedDataset), but its dataset is a "
                f"{type(dataset).__name__}; use default_hooks.sampler_seed=dict(type='DistSamplerSeedHook') instead"
            )
        if dataset.batch_size not in (None, loader.batch_size):
            raise ValueError(
                f"train_dataloader.dataset.batch_size={dataset.batch_size} differs from train_dataloader.batch_size="
                f"{loader.batch_size}: the workers would split the epoch into other batches than the loader forms. "
                "Leave the dataset's batch_size unset (this hook sets it) or make them equal."
            )
        dataset.batch_size = loader.batch_size
        if dataset.seed is None:
            seed = [runner.seed]
            broadcast_object_list(seed, src=0)
            dataset.seed = seed[0]
        runner.logger.info(
            f"reading {dataset.metainfo['num_samples']} samples from {dataset.metainfo['num_shards']} shards "
            f"({dataset.metainfo['manifest']}): {len(dataset)} per rank and epoch, seed {dataset.seed}, "
            f"batches of {dataset.batch_size} per worker"
        )

    def before_train_epoch(self, runner) -> None:
        runner.train_loop.dataloader.dataset.set_epoch(runner.epoch)
