"""Reading webdataset shards (:mod:`pretrain.data.shards`) as an IterableDataset
with an exact epoch.

The epoch, for ``N`` samples, ``W`` ranks and ``K`` loader workers per rank:

1. The shards are put in an order drawn from (seed, epoch); their samples in
   that order form the epoch's sequence, positions ``0 .. N-1``.
2. Rank ``r`` reads positions ``r*n .. (r+1)*n - 1`` with ``n = ceil(N / W)``.
   Positions past ``N - 1`` wrap to the sequence's start: as torch's
   ``DistributedSampler`` (and mmengine's ``DefaultSampler``) pad, every rank
   gets ``n`` samples, and ``n*W - N < W`` samples are read twice. When ``W``
   divides ``N`` every sample is read exactly once, whatever the shard count.
3. Each worker takes a contiguous part of its rank's positions, a whole number
   of ``batch_size`` batches (the rank's last partial batch goes to one worker),
   so the loader yields exactly ``len(dataloader)`` batches: per-worker partial
   batches would otherwise be dropped (``drop_last``) or added.
4. A worker reads its positions shard by shard (a shard cut at a boundary is read
   from/to the sample, headers skipped) through a shuffle buffer drawn from
   (seed, epoch, first position).

Each sample's augmentation is drawn under the seed of (seed, epoch, position),
as :class:`~pretrain.data.sampler.ResumableSampler` seeds the folder datasets,
so a sample looks the same whichever worker reads it. The same seed and epoch
give the same batches for a given world size, workers and batch size.
"""

import io
import math
import multiprocessing
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.registry import DATASETS
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision import transforms

from .pretrain_dataset import unreadable
from .sampler import SampleIndex, sample_random_state
from .shards import ShardSample, load_manifest, read_shard, verify_shard


def rank_positions(total: int, rank: int, world_size: int) -> range:
    """The epoch positions rank ``rank`` reads: ``ceil(total / world_size)`` of them."""
    per_rank = math.ceil(total / world_size)
    return range(rank * per_rank, (rank + 1) * per_rank)


def worker_positions(positions: range, worker: int, num_workers: int, batch_size: int | None) -> range:
    """Worker ``worker``'s contiguous part of ``positions``: whole batches spread
    evenly over the workers; the partial batch goes to the first worker with one
    batch fewer than others (worker 0 when they are even)."""
    batch = batch_size or 1
    full, rest = divmod(len(positions), batch)
    base, extra = divmod(full, num_workers)
    sizes = [(base + (w < extra)) * batch + (rest if w == extra else 0) for w in range(num_workers)]
    start = positions.start + sum(sizes[:worker])
    return range(start, start + sizes[worker])


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_shards)


def spans(counts: list[int], order: np.ndarray, positions: range) -> Iterator[tuple[int, int, int, int]]:
    """``(shard, start, stop, first position)``: the shard sample ranges holding
    ``positions`` of the sequence of shards ``order`` (wrapping past its end)."""
    ordered = [counts[i] for i in order]
    starts = np.concatenate([[0], np.cumsum(ordered)]).tolist()
    total = starts[-1]
    position = positions.start
    while position < positions.stop:
        offset = position % total
        i = bisect_right(starts, offset) - 1
        take = min(starts[i + 1] - offset, positions.stop - position)
        yield int(order[i]), offset - starts[i], offset - starts[i] + take, position
        position += take


def shuffle_buffer(items: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    """``items`` in a random order drawn through a buffer of ``size`` (1: as they come)."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ShardedDataset(IterableDataset):
    """The samples of a shard manifest (``tools/pack_shards.py``), an exact epoch per
    rank, split over the loader's workers (see the module doc). Yields
    :meth:`make_sample` of each :class:`ShardSample`; this class yields them as read.

    ``seed`` decides the order with the epoch (:meth:`set_epoch`); in a Runner,
    ``ShardedDataHook`` gives the run's seed, the loader's batch size and each
    epoch. ``batch_size``: the loader's (see the module doc, 3.). ``verify``
    compares each shard's sha256 with the manifest before reading it (it reads
    each shard twice). ``rank``/``world_size`` default to the process group's.
    """

    def __init__(
        self,
        manifest: str | Path,
        shuffle_buffer: int = 2000,
        seed: int | None = None,
        batch_size: int | None = None,
        verify: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.manifest = load_manifest(manifest)
        group_rank, group_size = get_dist_info()
        self.rank = group_rank if rank is None else rank
        self.world_size = group_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 (1: no shuffling within a worker), got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.batch_size = batch_size
        self.verify = verify
        # Shared memory: the loader's worker processes, persistent ones too, see set_epoch.
        self._epoch = multiprocessing.Value("q", 0, lock=False)
        self.metainfo = dict(
            classes=tuple(self.manifest.classes),
            split=self.manifest.split,
            manifest=str(self.manifest.path),
            num_samples=self.manifest.total,
            num_shards=len(self.manifest.shards),
        )

    def __len__(self) -> int:
        """Samples per epoch on this rank (all ranks read as many)."""
        return len(rank_positions(self.manifest.total, self.rank, self.world_size))

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def positions(self, worker: int | None = None, num_workers: int = 1) -> range:
        """The epoch positions one worker of this rank reads (by default the
        loader worker process calling this, or the only reader without workers)."""
        if worker is None:
            info = get_worker_info()
            worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        return worker_positions(
            rank_positions(self.manifest.total, self.rank, self.world_size), worker, num_workers, self.batch_size
        )

    def make_sample(self, sample: ShardSample) -> object:
        return sample

    def read(self, positions: range, epoch: int) -> Iterator[tuple[int, ShardSample]]:
        """``(position, sample)`` of ``positions`` in epoch ``epoch``, in sequence order."""
        shards = self.manifest.shards
        order = shard_order(len(shards), self.seed, epoch)
        verified = set()
        for shard, start, stop, first in spans([s.num_samples for s in shards], order, positions):
            if self.verify and shard not in verified:
                verify_shard(self.manifest, shards[shard])
                verified.add(shard)
            path = self.manifest.shard_path(shards[shard])
            yield from enumerate(read_shard(path, len(self.manifest.classes), start, stop), start=first)

    def __iter__(self) -> Iterator:
        if self.seed is None:
            raise RuntimeError(
                "ShardedDataset has no seed: pass seed=..., or train with ShardedDataHook "
                "(default_hooks.sampler_seed=dict(type='ShardedDataHook')), which gives it the run's seed"
            )
        epoch, positions = self.epoch, self.positions()
        rng = np.random.default_rng([self.seed, epoch, positions.start])
        for position, sample in shuffle_buffer(self.read(positions, epoch), self.shuffle_buffer, rng):
            with sample_random_state(SampleIndex(position, sample_seed(self.seed, epoch, position))):
                item = self.make_sample(sample)
            yield item  # outside the block: the consumer runs under the process's own random state


def decode_rgb(dataset: ShardedDataset, sample: ShardSample) -> Image.Image:
    """Decode a sample's image fully as RGB; a failure names the shard and key."""
    try:
        with Image.open(io.BytesIO(sample.data)) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise unreadable(f"{dataset.manifest.folder}/{sample.where}", err) from err


def pretrain_transform(img_size: int, crop_scale: tuple[float, float], hflip: bool) -> transforms.Compose:
    """PretrainImageDataset's augmentation: RandomResizedCrop (bicubic) and a flip."""
    crop = transforms.RandomResizedCrop(
        img_size, scale=tuple(crop_scale), interpolation=transforms.InterpolationMode.BICUBIC
    )
    return transforms.Compose([crop] + ([transforms.RandomHorizontalFlip()] if hflip else []))


@DATASETS.register_module()
class ShardedPretrainDataset(ShardedDataset):
    """:class:`~pretrain.data.PretrainImageDataset` read from shards: the same
    augmentation and samples, ``dict(inputs=uint8 (3, H, W))``; labels ignored.
    Decoding on the device (``decode="device"``) is not offered for shards."""

    def __init__(
        self,
        manifest: str | Path,
        img_size: int = 224,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        shuffle_buffer: int = 2000,
        seed: int | None = None,
        batch_size: int | None = None,
        verify: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(manifest, shuffle_buffer, seed, batch_size, verify, rank, world_size)
        self.transform = pretrain_transform(img_size, crop_scale, hflip)

    def make_sample(self, sample: ShardSample) -> dict:
        img = self.transform(decode_rgb(self, sample))
        return dict(inputs=torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
