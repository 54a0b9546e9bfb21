"""EMA teacher update and its momentum schedule."""

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def cosine_momentum(
    epoch: int,
    total_epochs: int,
    base: float = 0.96,
    final: float = 0.99,
    warmup_epochs: int = 0,
    warmup_start: float = 0.0,
) -> float:
    """Momentum for ``epoch`` (0-based), as the published code's per-epoch schedule:
    linear from ``warmup_start`` to ``base`` over the warm-up epochs (both ends
    included), then ``final + (base - final) * (1 + cos(pi * i / T)) / 2`` for
    i = 0 .. T-1, T = total - warm-up (so it starts at ``base`` and approaches ``final``)."""
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch {epoch} outside the schedule's 0..{total_epochs - 1}")
    if not 0 <= warmup_epochs < total_epochs:
        raise ValueError(f"warmup_epochs must be in 0..{total_epochs - 1}, got {warmup_epochs}")
    if epoch < warmup_epochs:
        if warmup_epochs == 1:
            return warmup_start
        return warmup_start + (base - warmup_start) * epoch / (warmup_epochs - 1)
    step, steps = epoch - warmup_epochs, total_epochs - warmup_epochs
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * step / steps))


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float, skip: torch.Tensor | None = None) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` over all teacher
    parameters, matched by name; any name or shape mismatch is an error.

    ``skip``: a 0-dim tensor on the teacher's device; where it is non-zero the
    teacher is left exactly as it is, decided on the device without a host
    synchronisation (the training step's non-finite-loss flag). The student may
    then hold NaNs, so the old value is selected, not blended with weight 0.

    A student sharded by FSDP2 (``fully_shard``: its parameters are DTensors) is
    gathered whole first; this is a collective, so every rank must call this.
    The teacher must not be sharded (every rank keeps a whole copy).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    teacher_params = dict(teacher.named_parameters())
    if student_params.keys() != teacher_params.keys():
        diff = sorted(student_params.keys() ^ teacher_params.keys())
        raise KeyError(f"teacher and student parameters differ: {diff}")
    names = list(teacher_params)
    for name in names:
        if teacher_params[name].shape != student_params[name].shape:
            raise ValueError(
                f"{name}: teacher {tuple(teacher_params[name].shape)} vs student {tuple(student_params[name].shape)}"
            )
    check_not_sharded(teacher)
    targets = [teacher_params[n].data for n in names]
    sources = [_whole(student_params[n]) for n in names]
    if skip is None:
        # lerp(t, s, 1 - m) = t + (1 - m) (s - t) = m t + (1 - m) s, one fused kernel per dtype/device.
        torch._foreach_lerp_(targets, sources, 1.0 - momentum)
        return
    keep = skip.to(torch.bool)
    blended = torch._foreach_lerp(targets, sources, 1.0 - momentum)
    for target, new in zip(targets, blended, strict=True):
        target.copy_(torch.where(keep, target, new))


def check_not_sharded(teacher: nn.Module) -> None:
    """The EMA writes every teacher parameter on every rank, so each rank needs the
    whole teacher: refuse one whose parameters FSDP2 sharded (DTensors)."""
    sharded = [name for name, param in teacher.named_parameters() if isinstance(param, DTensor)]
    if sharded:
        raise ValueError(
            f"the EMA teacher is sharded by FSDP ({len(sharded)} parameters, e.g. {sharded[0]}), but its update "
            "needs the whole teacher on every rank: keep it out of the sharded module "
            "(strategy=dict(type='FullyShardStrategy', replicated_modules=['sdae.teacher']))"
        )


def _whole(param: torch.Tensor) -> torch.Tensor:
    """The full value of a parameter: a DTensor shard (FSDP2) is all-gathered."""
    if isinstance(param, DTensor):
        return param.full_tensor()
    return param.data
