"""Whether a checkpoint's weights are the ones a model expects, before mmengine
loads them non-strictly (it only logs keys that do not match)."""

from pathlib import Path

import torch

from pretrain.checkpoints import load_checkpoint_file

from .hooks import unwrap_model
from .resume import _named_checkpoint, checkpoint_damage


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes differ from the model's."""


def _examples(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def model_state(loaded: dict) -> dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint (an mmengine checkpoint, or a bare
    state dict), without the ``module.`` prefix of DDP-saved files."""
    state = loaded.get("state_dict", loaded)
    return {key.removeprefix("module."): value for key, value in state.items()}


def check_checkpoint_matches(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` (an mmengine
    checkpoint, or a bare state dict) holds exactly the model's keys with the
    model's shapes: evaluating a model whose weights were partly or not at all
    replaced would report the metrics of its initialisation."""
    check_state_matches(model, model_state(load_checkpoint_file(checkpoint)), checkpoint)


def check_state_matches(model: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: str | Path) -> None:
    """:func:`check_checkpoint_matches` for weights already read from ``checkpoint``."""
    expected = unwrap_model(model).state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected.keys() & state.keys()
        if isinstance(state[key], torch.Tensor) and state[key].shape != expected[key].shape
    )
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the model's {len(expected)} keys missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} keys the model does not have ({_examples(unexpected)})")
    if reshaped:
        problems.append(f"{len(reshaped)} shapes differ, checkpoint vs model ({_examples(reshaped)})")
    raise CheckpointMismatchError(
        f"{checkpoint} does not fit this config's model: {'; '.join(problems)}. Give the checkpoint that "
        "tools/train.py wrote for this config (a pretraining checkpoint or backbone file goes through "
        "--backbone of tools/train.py, not tools/test.py)"
    )


SELECTIONS = ("best", "last")


def trained_checkpoint(path: str | Path, select: str | None = None) -> Path:
    """The checkpoint to evaluate: ``path`` itself when it is a file; in a work
    dir of tools/train.py, the one ``select`` names - ``last`` (the file
    ``last_checkpoint`` points to: the run's final weights) or ``best`` (the
    ``best_*.pth`` that the CheckpointHook's ``save_best`` kept). A missing,
    ambiguous or damaged checkpoint is an error naming it."""
    path = Path(path)
    if path.is_file():
        if select is not None:
            raise ValueError(f"--select-checkpoint {select} picks a checkpoint in a work dir; {path} is a file")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if select not in SELECTIONS:
        raise ValueError(f"{path} is a work dir: say which of its checkpoints with --select-checkpoint best|last")
    if select == "last":
        chosen = _named_checkpoint(path)
        if chosen is None:
            raise FileNotFoundError(f"{path} has no usable last_checkpoint file: has its training run finished?")
    else:
        best = sorted(path.glob("best_*.pth"))
        if len(best) != 1:
            found = ", ".join(p.name for p in best) or "none"
            raise FileNotFoundError(
                f"{path} should hold exactly one best_*.pth (the config's checkpoint hook with save_best); "
                f"found {found}"
            )
        chosen = best[0]
    damage = checkpoint_damage(chosen)
    if damage:
        raise ValueError(f"{chosen} cannot be evaluated: {damage}")
    return chosen
