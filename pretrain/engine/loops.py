"""An epoch-based train loop whose resumes continue exactly where the run stopped."""

import itertools
from collections.abc import Iterator

import torch
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import BatchSampler

from pretrain.data.sampler import ResumableSampler


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` with two differences that make resumes exact.

    Mid-epoch checkpoints (``default_hooks.checkpoint.by_epoch=False``): mmengine
    restores the iteration count but runs the interrupted epoch again from its
    first batch - more optimizer steps than planned, schedules past their end,
    a negative ETA. This loop continues that epoch with the batch after the
    last trained one, under its own ``batch_idx``, so the run makes exactly
    ``max_epochs x len(dataloader)`` steps. The trained batches are skipped
    without being loaded when the train dataloader samples with
    :class:`ResumableSampler` and torch's default batching; any other sampler or
    batch sampler (e.g. mmdet's ``AspectRatioBatchSampler``) forms its batches
    as it goes, so they are loaded and dropped, and the log says so.

    The main random stream: a DataLoader draws its workers' base seed from
    torch's global generator whenever it starts an iteration - every epoch, or
    only the first with persistent workers, and at a resumed run's first epoch
    in any case - which shifts the masks a resumed run draws. Here the
    iteration starts with the global generator forked, so the stream that the
    checkpoint restores is the stream the model uses.
    """

    def run_epoch(self) -> None:
        trained = self._iter - self._epoch * len(self.dataloader)  # batches of this epoch already trained
        if not 0 <= trained <= len(self.dataloader):
            raise ValueError(
                f"the resumed checkpoint is at iteration {self._iter}, epoch {self._epoch}, which does not fit "
                f"epochs of {len(self.dataloader)} batches: the training set or the batch changed since it was "
                "saved. Resume with the data and batch it was trained with, or start over with --no-resume."
            )
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        for idx, data_batch in enumerate(self._batches_after(trained), start=trained):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1

    def _batches_after(self, trained: int) -> Iterator:
        """This epoch's batches from index ``trained`` on."""
        loader = self.dataloader
        skippable = isinstance(loader.sampler, ResumableSampler) and type(loader.batch_sampler) is BatchSampler
        if trained and skippable:
            loader.sampler.skip_next_epoch_start(min(trained * loader.batch_size, loader.sampler.num_samples))
            self.runner.logger.info(
                f"resuming inside epoch {self._epoch + 1}: the sampler skips its first {trained} batches, "
                "trained before the checkpoint"
            )
        with torch.random.fork_rng(devices=[]):
            batches = iter(loader)
        if trained and not skippable:
            self.runner.logger.warning(
                f"resuming inside epoch {self._epoch + 1}: its first {trained} batches were trained before the "
                f"checkpoint; {type(loader.sampler).__name__} / {type(loader.batch_sampler).__name__} cannot skip "
                "them, so they are loaded and dropped (ResumableSampler with the default batching skips them)"
            )
            return itertools.islice(batches, trained, None)
        return batches
