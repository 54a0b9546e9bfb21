"""Training hooks: the EMA teacher update, exact random-state resumption, the
effective-batch check on resume and the losses' way from the device to the log
and the non-finite check."""

import random

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook, LoggerHook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from pretrain.models import cosine_momentum
from pretrain.models.ema import check_not_sharded

from .model import DeviceLossBuffer, NonFiniteLossError, non_finite_message
from .runtime import effective_batch_size


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
        check_not_sharded(unwrap_model(runner.model).sdae.teacher)  # now, not after the first epoch
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


def _batch_layout(runner) -> dict:
    """The effective batch of this run and what it is made of."""
    cfg = runner.cfg
    return dict(
        images=effective_batch_size(cfg, get_world_size()),
        world_size=get_world_size(),
        batch_size=cfg.train_dataloader.batch_size,
        accumulation=cfg.optim_wrapper.get("accumulative_counts", 1),
    )


def _describe(layout: dict) -> str:
    return (
        f"{layout['images']} images per optimizer step ({layout['world_size']} process(es) x "
        f"{layout['batch_size']} x {layout['accumulation']} accumulation)"
    )


@HOOKS.register_module()
class EffectiveBatchHook(Hook):
    """Stores the effective batch (processes x batch per process x accumulation)
    in every checkpoint's meta and refuses to resume from a checkpoint trained
    with another one: the learning rate (``lr_scaling``) was set for it, and the
    schedules count iterations, whose number per epoch follows from it. Other
    processes x batch with the same product and accumulation (8 GPUs x 96 or
    4 GPUs x 192) are accepted."""

    priority = "VERY_HIGH"  # refuse before any other hook acts on the resumed state

    def __init__(self) -> None:
        self._resumed: dict | None = None
        self._loaded = False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["meta"]["effective_batch"] = _batch_layout(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = True
        self._resumed = checkpoint.get("meta", {}).get("effective_batch")

    def before_train(self, runner) -> None:
        # Only a resumed run continues a schedule; ``load_from`` (weights only) starts at iteration 0.
        if not self._loaded or runner.iter == 0:
            return
        source = runner.cfg.get("load_from") or f"the checkpoint named in {runner.work_dir}/last_checkpoint"
        current, saved = _batch_layout(runner), self._resumed
        if saved is None:
            runner.logger.warning(
                f"{source} does not record its effective batch (written before this check existed); "
                f"resuming with {_describe(current)} unchecked"
            )
        elif (saved["images"], saved["accumulation"]) != (current["images"], current["accumulation"]):
            raise ValueError(
                f"cannot resume from {source}: it was trained with {_describe(saved)}, this run has "
                f"{_describe(current)}; its learning rate and iteration-based schedule were built for "
                f"{saved['images']} images per step, {saved['images'] // saved['accumulation']} per iteration. "
                "Resume with the same number of GPUs (processes) x train_dataloader.batch_size and the same "
                "optim_wrapper.accumulative_counts, or start a new run with --no-resume (or in another --work-dir)."
            )


def _checkpoint_due_after_iter(runner, checkpoint_hooks: list[CheckpointHook]) -> bool:
    """Whether an iteration-based checkpoint hook saves after the current iteration."""
    return any(
        not hook.by_epoch
        and (
            hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
            or (hook.save_last and hook.is_last_train_iter(runner))
        )
        for hook in checkpoint_hooks
    )


def device_skip_unsupported(optim_wrapper: OptimWrapper) -> str | None:
    """Why the optimizer cannot skip a step on the device (None if it can): only
    optimizers that follow torch's GradScaler protocol (the fused ones) read a
    ``found_inf`` flag, and an active loss scaler writes that flag itself."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        return "several optimizers"
    optimizer = optim_wrapper.optimizer
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return f"{type(optimizer).__name__} is not fused (set optimizer fused=True to skip steps on the device)"
    scaler = getattr(optim_wrapper, "loss_scaler", None)
    if scaler is not None and scaler.is_enabled():
        return "dynamic loss scaling (fp16) decides which steps to skip"
    return None


@HOOKS.register_module()
class DeferredLossHook(Hook):
    """Keeps host synchronisations out of the training step.

    mmengine's loop turns every logged loss into a Python float (``.item()``)
    after every iteration, and the non-finite check needs the loss on the host:
    each forces the host to wait for the device. With this hook the model keeps
    each iteration's losses and a finiteness flag on the device
    (:class:`DeviceLossBuffer`); the hook moves all pending values to the host in
    one transfer ("flush") only where they are needed - when the logger writes,
    before a checkpoint is saved, at the end of every epoch and every
    ``interval`` iterations if given - feeds them to the message hub in
    iteration order (the log shows the same values as without the hook), and
    raises :class:`NonFiniteLossError` naming the first bad iteration.

    Guarantee: a non-finite loss (on any rank) at iteration i makes the
    optimizer step and the teacher EMA update of iteration i and of every later
    iteration no-ops, decided on the device (the fused optimizer reads the
    flag as ``found_inf``; the EMA keeps the old teacher). The run stops at the
    first flush after i - before any checkpoint is written - with the student,
    decoder, optimizer state and teacher exactly as they were before
    iteration i. Only the stop itself comes up to one flush interval later
    than with a per-iteration check.

    This needs an optimizer that can skip a step on the device (``fused=True``)
    and no dynamic loss scaler (fp16 AMP). Otherwise the hook leaves the model
    in its per-iteration mode: the loss is checked on the host at every
    iteration, before backward, as without the hook, and the log says why.
    """

    priority = "ABOVE_NORMAL"  # before the EMA update (NORMAL), the logger and the checkpoint

    def __init__(self, interval: int | None = None) -> None:
        if interval is not None and interval < 1:
            raise ValueError(f"DeferredLossHook interval must be >= 1 or None, got {interval}")
        self.interval = interval
        self.buffer: DeviceLossBuffer | None = None
        self._logger_interval = 0
        self._checkpoint_hooks: list[CheckpointHook] = []

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if not hasattr(model, "loss_buffer"):
            raise TypeError(f"DeferredLossHook needs a model with a loss_buffer (SdAEPretrainer), not {type(model)}")
        self._checkpoint_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        self._logger_interval = next((h.interval for h in runner.hooks if isinstance(h, LoggerHook)), 0)
        reason = device_skip_unsupported(runner.optim_wrapper)
        if reason is not None:
            runner.logger.info(f"non-finite loss check: on the host after every iteration ({reason})")
            return
        device = next(p.device for p in model.parameters() if p.requires_grad)
        self.buffer = DeviceLossBuffer(device)
        runner.optim_wrapper.optimizer.found_inf = self.buffer.skip_updates
        model.loss_buffer = self.buffer
        when = [f"every {n} iterations" for n in (self._logger_interval, self.interval) if n]
        when.append("before checkpoints and at epoch ends")
        runner.logger.info(
            "losses stay on the device and reach the log and the non-finite check in one transfer "
            f"({', '.join(when)}); steps after a non-finite loss are skipped on the device"
        )

    def _due(self, runner, batch_idx: int) -> bool:
        return (
            self.every_n_inner_iters(batch_idx, self._logger_interval)
            or (self.interval is not None and self.every_n_train_iters(runner, self.interval))
            or self.end_of_epoch(runner.train_dataloader, batch_idx)
            or self.is_last_train_iter(runner)
            or _checkpoint_due_after_iter(runner, self._checkpoint_hooks)
        )

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.buffer is not None and self._due(runner, batch_idx):
            self.flush(runner)

    def after_train_epoch(self, runner) -> None:
        if self.buffer is not None:
            self.flush(runner)

    def after_train(self, runner) -> None:
        if self.buffer is not None:
            unwrap_model(runner.model).loss_buffer = None
            del runner.optim_wrapper.optimizer.found_inf
            self.buffer = None

    def flush(self, runner) -> None:
        """Pending losses to the message hub; raises at the first non-finite one."""
        for logged in self.buffer.drain():
            if not logged.finite:
                loss = logged.values.get("loss", float("nan"))
                raise NonFiniteLossError(non_finite_message(loss, logged.iteration, logged.epoch, runner.iter))
            for name, value in logged.values.items():
                runner.message_hub.update_scalar(f"train/{name}", value)
