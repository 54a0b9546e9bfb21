"""ImageNet classification read from webdataset shards (``tools/pack_shards.py``)."""

from pathlib import Path

from mmengine.registry import DATASETS

from pretrain.data.shard_dataset import ShardedDataset, decode_rgb
from pretrain.data.shards import ShardSample

from .data import TRANSFORMS


@DATASETS.register_module()
class ShardedImageNetClassification(ShardedDataset):
    """:class:`~classification.data.ImageNetClassification` read from shards, for
    training: the same transforms (``finetune``, ``linprobe`` or ``eval``) and
    samples, ``dict(inputs=..., data_samples=label)``, labels from the class list
    the packing recorded (the folder datasets' list). Validation stays on the
    folder dataset: mmengine's distributed evaluation orders results by sampler
    index, which an IterableDataset has not.

    Needs ``ShardedDataHook`` in place of ``DistSamplerSeedHook`` and
    ``train_dataloader.sampler=None`` (see the README)."""

    def __init__(
        self,
        manifest: str | Path,
        transform: str,
        img_size: int = 224,
        shuffle_buffer: int = 2000,
        seed: int | None = None,
        batch_size: int | None = None,
        verify: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
        super().__init__(manifest, shuffle_buffer, seed, batch_size, verify, rank, world_size)
        self.transform = TRANSFORMS[transform](img_size)

    def make_sample(self, sample: ShardSample) -> dict:
        return dict(inputs=self.transform(decode_rgb(self, sample)), data_samples=sample.label)
