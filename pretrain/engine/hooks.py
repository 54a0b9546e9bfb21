"""Training hooks: the EMA teacher update and exact random-state resumption."""

import random

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from pretrain.models import cosine_momentum


def unwrap_model(model):
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class TeacherEMAHook(Hook):
    """``teacher <- m * teacher + (1 - m) * student`` over the encoder.

    ``interval="epoch"`` (the published default) updates once after every
    epoch; ``"iter"`` after every optimizer step (with gradient accumulation,
    once per accumulated step). In both modes ``m`` follows the published
    per-epoch cosine schedule from ``momentum`` to ``final_momentum``, with an
    optional linear warm-up from ``warmup_momentum`` over ``warmup_epochs``.
    Per-iteration EMA needs momenta much closer to 1 (paper, Fig. 4a).

    ``interval="count"`` keeps the published *number* of updates whatever the
    run length: ``num_updates`` updates (300, one per published epoch) spread
    evenly over the run's iterations, the k-th after iteration
    ``ceil((k + 1) * max_iters / num_updates)`` with the momentum the published
    schedule gives epoch k of ``num_updates`` (``warmup_epochs`` counts updates
    here). A run shorter than ``num_updates`` iterations applies several
    updates after one step, in order. Per-epoch updates of a 6-epoch run are 6
    updates, not the published teacher; this mode is.

    Runs before the checkpoint hook, so a saved teacher includes the update.
    """

    priority = "NORMAL"

    def __init__(
        self,
        interval: str = "epoch",
        momentum: float = 0.96,
        final_momentum: float = 0.99,
        warmup_epochs: int = 0,
        warmup_momentum: float = 0.0,
        num_updates: int = 300,
    ) -> None:
        if interval not in ("epoch", "iter", "count"):
            raise ValueError(f"TeacherEMAHook interval must be 'epoch', 'iter' or 'count', got {interval!r}")
        if num_updates < 1:
            raise ValueError(f"TeacherEMAHook num_updates must be >= 1, got {num_updates}")
        for name, value in dict(
            momentum=momentum, final_momentum=final_momentum, warmup_momentum=warmup_momentum
        ).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TeacherEMAHook {name} must be in [0, 1], got {value}")
        self.interval = interval
        self.momentum = momentum
        self.final_momentum = final_momentum
        self.warmup_epochs = warmup_epochs
        self.warmup_momentum = warmup_momentum
        self.num_updates = num_updates
        self.updates_done = 0  # count mode: updates applied so far

    def momentum_at(self, epoch: int, max_epochs: int) -> float:
        return cosine_momentum(
            epoch, max_epochs, self.momentum, self.final_momentum, self.warmup_epochs, self.warmup_momentum
        )

    def before_train(self, runner) -> None:
        if not getattr(unwrap_model(runner.model), "has_teacher", False):
            raise ValueError(
                "TeacherEMAHook is configured but the model has no teacher "
                "(target='pixels' is the MAE baseline): remove the hook from custom_hooks"
            )
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise ValueError("TeacherEMAHook follows a per-epoch schedule: use an EpochBasedTrainLoop")
        if self.interval == "count":
            self.momentum_at(0, self.num_updates)  # validates warmup_epochs against the update count
            self.updates_done = self.updates_due(runner.iter, runner.max_iters)  # resumed runs
        else:
            self.momentum_at(0, runner.max_epochs)  # validates warmup_epochs against the run length

    def updates_due(self, iters_done: int, max_iters: int) -> int:
        """Count mode: how many of the ``num_updates`` updates belong to the first ``iters_done`` iterations."""
        return self.num_updates * iters_done // max_iters

    def _update(self, runner) -> None:
        momentum = self.momentum_at(runner.epoch, runner.max_epochs)
        unwrap_model(runner.model).update_teacher(momentum)
        runner.message_hub.update_scalar("train/teacher_momentum", momentum)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not runner.optim_wrapper.should_update():
            return  # mid-accumulation: the student has not stepped
        if self.interval == "iter":
            self._update(runner)
        elif self.interval == "count":
            model = unwrap_model(runner.model)
            due = self.updates_due(runner.iter + 1, runner.max_iters)
            for k in range(self.updates_done, due):
                momentum = self.momentum_at(k, self.num_updates)
                model.update_teacher(momentum)
                runner.message_hub.update_scalar("train/teacher_momentum", momentum)
            self.updates_done = due

    def after_train_epoch(self, runner) -> None:
        if self.interval == "epoch":
            self._update(runner)


def _capture_random_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=dict(
            kind=kind,
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=pos,
            has_gauss=has_gauss,
            cached_gaussian=cached,
        ),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_random_state(state: dict) -> None:
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Saves every rank's python / numpy / torch (and CUDA) random state in each
    checkpoint and restores it on resume, so that a resumed run draws the same
    masks and augmentations as an uninterrupted one (mmengine alone re-seeds).

    Only rank 0 writes checkpoints, so the states are gathered from all ranks
    just before the checkpoint hook runs (this hook has a higher priority) at
    the epochs / iterations where it saves. They are restored in
    ``before_train``, after mmengine's own re-seeding. A checkpoint written with
    a different number of ranks cannot be continued exactly; that is logged.
    """

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._gathered: list | None = None
        self._pending: list | None = None
        self._checkpoint_hooks: list[CheckpointHook] = []

    def before_train(self, runner) -> None:
        self._checkpoint_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        # Only a resumed run continues a stream; ``load_from`` (weights only) starts at iteration 0.
        if self._pending is not None and runner.iter > 0:
            _restore_random_state(self._pending[get_rank()])
        self._pending = None

    def _gather(self) -> None:
        self._gathered = all_gather_object(_capture_random_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for hook in self._checkpoint_hooks:
            if not hook.by_epoch and (
                hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_iter(runner))
            ):
                self._gather()
                return

    def after_train_epoch(self, runner) -> None:
        self._gather()  # one small collective per epoch

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._gathered is not None:
            checkpoint["random_states"] = self._gathered
        elif get_world_size() == 1:
            checkpoint["random_states"] = [_capture_random_state()]
        else:
            runner.logger.warning(
                "random states were not gathered for this checkpoint; resuming from it will not be bit-exact"
            )
        self._gathered = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get("random_states")
        if states is None:
            runner.logger.warning("checkpoint holds no random states; the resumed run is not bit-exact")
        elif len(states) != get_world_size():
            runner.logger.warning(
                f"checkpoint holds random states of {len(states)} ranks but {get_world_size()} are "
                "running; the resumed run continues correctly but not bit-exactly"
            )
        else:
            self._pending = states
