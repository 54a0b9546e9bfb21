"""A training sampler for exact resumes: it can start an epoch after the batches
an interrupted run already trained, and it gives every sample the seed of its
random augmentation, so that what a sample looks like does not depend on which
worker process draws it, or on how long that process has lived.

Why the seed travels with the index: mmengine seeds each data-loading worker
once, when it starts. Persistent workers (``persistent_workers=True``) then
continue their random streams across epochs, while a resumed run starts fresh
workers at the resumed epoch: its crops differ from an uninterrupted run's.
Seeding each sample from (run seed, epoch, index) makes both draw the same.
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.registry import DATA_SAMPLERS


class SampleIndex(int):
    """A dataset index that carries the seed of the sample's random augmentation.
    It is an ``int`` for every other use (and pickles to the workers as one with its seed)."""

    seed: int

    def __new__(cls, index: int, seed: int) -> "SampleIndex":
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):
        return SampleIndex, (int(self), self.seed)


@contextmanager
def sample_random_state(index: int) -> Iterator[None]:
    """Inside the block python's, numpy's and torch's (CPU) global generators are
    seeded from ``index.seed`` (a :class:`SampleIndex`); afterwards they are as
    before, so a dataset read in the main process (``num_workers=0``) leaves the
    training's random stream alone. A plain ``int`` index changes nothing."""
    seed = getattr(index, "seed", None)
    if seed is None:
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same order of indices for a given seed and
    epoch, same split across ranks) that

    * yields :class:`SampleIndex` objects: the seed of sample ``i`` in epoch ``e``
      is drawn from (sampler seed, ``e``) at position ``i``, the same on every rank,
      worker and run; datasets that augment under :func:`sample_random_state`
      (``PretrainImageDataset``) draw the same augmentation for it wherever it is
      loaded, so an interrupted and resumed run sees the same images as an
      uninterrupted one, with or without persistent workers;
    * can skip the first samples of the next epoch without loading them
      (:meth:`skip_next_epoch_start`), which the train loop uses to continue an
      epoch interrupted after a mid-epoch checkpoint.
    """

    def __init__(self, dataset, shuffle: bool = True, seed: int | None = None, round_up: bool = True) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        self._skip = 0

    def skip_next_epoch_start(self, num_samples: int) -> None:
        """The next iteration starts after its first ``num_samples`` indices (this rank's)."""
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(f"cannot skip {num_samples} of an epoch of {self.num_samples} samples")
        self._skip = num_samples

    def sample_seeds(self) -> np.ndarray:
        """This epoch's augmentation seed of every dataset index."""
        generator = np.random.default_rng([self.seed % 2**64, self.epoch])
        return generator.integers(0, 2**63, size=len(self.dataset), dtype=np.int64)

    def __iter__(self) -> Iterator[SampleIndex]:
        indices = list(super().__iter__())[self._skip :]
        self._skip = 0
        seeds = self.sample_seeds()
        return iter([SampleIndex(i, int(seeds[i])) for i in indices])
