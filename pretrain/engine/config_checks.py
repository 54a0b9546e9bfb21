"""Config mistakes that mmengine accepts silently or reports only late: options
that override nothing, values of the wrong type, hook options no hook takes."""

import difflib
import inspect
from collections.abc import Iterator

from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS
from mmengine.runner import FlexibleRunner, Runner

# Read by mmengine's Runner from its config beyond its arguments (runner_type: by tools/train.py, to pick one).
RUNNER_OWN_KEYS = {
    "model_wrapper_cfg", "sync_bn", "find_unused_parameters", "activation_checkpointing",
    "efficient_conv_bn_eval", "compile", "custom_imports", "runner_type",
}  # fmt: skip
# Read by this project (pretrain/engine/runtime.py).
PROJECT_KEYS = {"lr_scaling"}


class ConfigOptionError(ValueError):
    """A ``--cfg-options`` entry or a config key that cannot be what the user meant."""


def _leaf_paths(node, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, f"{prefix}{key}.")
    yield prefix.rstrip(".")


def _suggest(key: str, cfg: Config, consumed: set[str]) -> str:
    """Paths of the config, under keys that are read, whose last part is
    spelled like ``key``'s (``max_epoch`` -> ``train_cfg.max_epochs``)."""
    paths = [p for p in _leaf_paths(cfg.to_dict()) if p and p.split(".")[0] in consumed]
    last = key.split(".")[-1]
    names = difflib.get_close_matches(last, {p.split(".")[-1] for p in paths}, n=3, cutoff=0.8)
    close = [p for p in paths if p.split(".")[-1] in names][:3]
    if not close:
        return ""
    # train_cfg.max_epochs alone leaves the schedulers' end where it was
    epochs = " (or tools/train.py --epochs N, which also stretches the schedulers)" if last == "max_epochs" else ""
    return f"; did you mean {' or '.join(close)}{epochs}?"


def type_problem(old, new) -> str | None:
    """Why ``new`` cannot replace the config's ``old`` value (None if it can)."""
    if old is None or new is None or isinstance(old, dict):
        return None  # unset, unsetting, or a sub-config replaced as a whole
    if isinstance(old, bool):
        return None if isinstance(new, bool) else "True or False"
    if isinstance(old, int):
        return None if isinstance(new, int) and not isinstance(new, bool) else "an integer"
    if isinstance(old, float):
        return None if isinstance(new, int | float) and not isinstance(new, bool) else "a number"
    if isinstance(old, str):
        return None if isinstance(new, str) else "a string"
    if isinstance(old, list | tuple):
        return None if isinstance(new, list | tuple) else "a list"
    return None


def consumed_top_level_keys() -> set[str]:
    """Top-level config keys that something reads after the file is parsed: the
    arguments of the Runner and the FlexibleRunner (``strategy``), the keys they
    read themselves, and this project's."""
    runner_args = set()
    for runner in (Runner, FlexibleRunner):
        runner_args |= set(inspect.signature(runner.__init__).parameters) - {"self"}
    return runner_args | RUNNER_OWN_KEYS | PROJECT_KEYS


def check_cfg_options(cfg: Config, options: dict) -> None:
    """Refuse ``--cfg-options`` that would be ignored or break the run late: a
    top-level key nothing reads after parsing - a missing one or a variable of
    the config file such as ``max_epochs``, already copied into
    ``train_cfg.max_epochs`` and the schedulers when the file was read - and a
    value whose type differs from the config's (``train_dataloader.batch_size=abc``).
    Keys below an existing entry may be new (``optim_wrapper.clip_grad.max_norm``)."""
    consumed = consumed_top_level_keys()
    for key, value in options.items():
        parts = key.split(".")
        if parts[0] not in consumed:
            what = (
                "a variable of the config file, read only while the file was parsed"
                if parts[0] in cfg
                else "no key of the config"
            )
            raise ConfigOptionError(
                f"--cfg-options {key}={value!r}: {parts[0]!r} is {what}, so this would change "
                f"nothing{_suggest(key, cfg, consumed)}"
            )
        node = cfg.to_dict()
        for part in parts:
            if isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                node = None  # a new key: nothing to compare with
                break
        expected = type_problem(node, value)
        if expected is not None:
            raise ConfigOptionError(
                f"--cfg-options {key}={value!r}: the config's value is {node!r}; expected {expected}"
            )


def _hook_specs(cfg: Config) -> Iterator[tuple[str, dict]]:
    for name, spec in (cfg.get("default_hooks") or {}).items():
        if spec:
            yield f"default_hooks.{name}", spec
    for i, spec in enumerate(cfg.get("custom_hooks") or []):
        yield f"custom_hooks[{i}]", spec


def check_hook_options(cfg: Config) -> None:
    """Every option of every configured hook must be a parameter of its class.
    ``CheckpointHook`` hands unknown options to ``Runner.save_checkpoint``,
    which takes none of them, so a typo there would surface only at the first
    save, after a whole epoch of training."""
    with HOOKS.switch_scope_and_registry(cfg.get("default_scope")) as registry:
        for where, spec in _hook_specs(cfg):
            hook_type = spec.get("type")
            cls = registry.get(hook_type) if isinstance(hook_type, str) else hook_type
            if not inspect.isclass(cls):
                continue  # an unknown type: the Runner's build names it
            parameters = inspect.signature(cls.__init__).parameters
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            if takes_any and not issubclass(cls, CheckpointHook):
                continue
            known = [name for name in parameters if name != "self"]
            for option in spec:
                if option in ("type", "priority") or option in known:
                    continue
                close = difflib.get_close_matches(option, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(known)}"
                raise ConfigOptionError(f"{where}: {cls.__name__} has no option {option!r}{hint}")
