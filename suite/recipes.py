"""Which config of a task runs on the GPUs at hand.

A recipe is published for one data-parallel size; its effective batch (GPUs x
batch per GPU x accumulation steps) is what the paper's numbers were measured
at. Beside each recipe lie configs of the same recipe that split that batch
otherwise; by the naming convention they differ from the recipe's file name
only in the ``<GPUs>xb<batch>[-accum<steps>]`` part. For a number of GPUs the
suite takes the one that keeps the published effective batch, and refuses any
other batch unless it is asked to change it (the lr then follows the batch).
"""

import argparse
import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path

from mmengine.config import Config, DictAction

from pretrain.engine.config_checks import check_cfg_options, check_hook_options
from pretrain.engine.config_io import read_config
from pretrain.engine.runtime import AMP_DTYPES, effective_batch_size

REPO = Path(__file__).resolve().parents[1]
BATCH_PART = re.compile(r"\d+xb\d+(?:-accum\d+)?")
LR_KEY = "optim_wrapper.optimizer.lr"
UNSET = object()  # a key the recipe does not have


@dataclass(frozen=True)
class Recipe:
    config: str
    data_note: str  # what the numbers were measured on, for the report
    gpus: int = 1  # the data-parallel size the recipe was published for


PRESETS: dict[str, dict[str, Recipe]] = {
    "mini": {
        "finetune": Recipe("classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py", "synthetic"),
        "linprobe": Recipe("classification/configs/vit-tiny-p16_linprobe_1xb64-20e_synthetic.py", "synthetic"),
        "ade20k": Recipe("segmentation/configs/upernet_vit-tiny-p16_1xb4-40it_synthetic-128x128.py", "synthetic"),
        "coco": Recipe("detection/configs/mask-rcnn_vit-tiny-p16_fpn_1xb2-2e_synthetic.py", "synthetic"),
        "knn": Recipe("classification/configs/knn_vit-tiny-p16_synthetic.py", "synthetic"),
        "lowshot": Recipe("classification/configs/lowshot_vit-tiny-p16_synthetic.py", "synthetic"),
        "attentive": Recipe("classification/configs/vit-tiny-p16_attentive_1xb64-20e_synthetic.py", "synthetic"),
        "ade20k-linear": Recipe("segmentation/configs/linear_vit-tiny-p16_1xb4-40it_synthetic-128x128.py", "synthetic"),
    },
    # The full recipes shrunk (model, resolution, schedule) for the real-image mini suite
    # (pretrain/data/real_suite.py; a ViT-micro with 8 px patches): the same pipelines,
    # losses and metrics; tests/test_real_suite.py lists the keys that may differ.
    "real": {
        "finetune": Recipe("classification/configs/real/vit-micro-p8_finetune_1xb128-20e_realsuite64.py", "real"),
        "linprobe": Recipe("classification/configs/real/vit-micro-p8_linprobe_1xb256-30e_realsuite64.py", "real"),
        "ade20k": Recipe("segmentation/configs/real/upernet_vit-micro-p8_1xb4-300it_realsuite-128x128.py", "real"),
        "coco": Recipe("detection/configs/real/mask-rcnn_vit-micro-p8_fpn_1xb1-4e_realsuite.py", "real"),
        "knn": Recipe("classification/configs/real/knn_vit-micro-p8_realsuite64.py", "real"),
        "lowshot": Recipe("classification/configs/real/lowshot_vit-micro-p8_realsuite64.py", "real"),
        "attentive": Recipe("classification/configs/real/vit-micro-p8_attentive_1xb128-30e_realsuite64.py", "real"),
        "ade20k-linear": Recipe(
            "segmentation/configs/real/linear_vit-micro-p8_1xb4-2000it_realsuite-128x128.py", "real"
        ),
    },
    "full": {
        "finetune": Recipe("classification/configs/vit-base-p16_finetune_8xb128-amp-100e_in1k.py", "ImageNet-1k", 8),
        "linprobe": Recipe("classification/configs/vit-base-p16_linprobe_8xb2048-amp-90e_in1k.py", "ImageNet-1k", 8),
        "ade20k": Recipe("segmentation/configs/upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py", "ADE20K", 8),
        "coco": Recipe("detection/configs/mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py", "COCO 2017", 16),
        "knn": Recipe("classification/configs/knn_vit-base-p16_in1k.py", "ImageNet-1k"),
        "lowshot": Recipe("classification/configs/lowshot_vit-base-p16_in1k.py", "ImageNet-1k"),
        "attentive": Recipe("classification/configs/vit-base-p16_attentive_32xb256-amp-90e_in1k.py", "ImageNet-1k", 32),
        "ade20k-linear": Recipe("segmentation/configs/linear_vit-b16_8xb2-40k_ade20k-512x512.py", "ADE20K", 8),
    },
}


# Tasks that evaluate another task's checkpoint run with that task's recipe (suite.runner.TASK_SPECS).
PRESETS = {
    name: {**recipes, "ade20k-msflip": recipes["ade20k"], "robustness": recipes["finetune"]}
    for name, recipes in PRESETS.items()
}


class BatchMismatchError(ValueError):
    """No config of a task reaches its published effective batch on the GPUs asked for."""


@dataclass(frozen=True)
class Setup:
    """A task's config on ``world_size`` processes and the batch it trains with."""

    config: Path
    world_size: int
    batch_per_gpu: int
    accumulation: int
    effective_batch: int
    published_batch: int
    lr_options: tuple[str, ...]  # cfg-options rescaling an absolute lr (only when the batch changes)
    changes: tuple[str, ...]  # how the run differs from its config, for the record and the report
    seed: int | None  # the config's randomness.seed (with the user's options)
    loaders: tuple[str, ...] = ("train_dataloader", "val_dataloader", "test_dataloader")  # those the config has

    @property
    def arithmetic(self) -> str:
        return f"{self.world_size} x {self.batch_per_gpu} x {self.accumulation} = {self.effective_batch}"


def parse_cfg_options(items: list[str] | tuple[str, ...]) -> dict:
    """``k=v`` strings parsed exactly as tools/train.py parses them (mmengine's DictAction)."""
    for item in items:
        if "=" not in item:
            raise ValueError(f"--cfg-options takes key=value items; got {item!r}")
    if not items:
        return {}
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(["--cfg-options", *items]).cfg_options


def load_config(path: Path, options: dict) -> Config:
    """``path`` with ``options`` merged, checked as tools/train.py checks them
    (options that would change nothing or have the wrong type are refused)."""
    cfg = read_config(path)
    check_cfg_options(cfg, options)
    cfg.merge_from_dict(copy.deepcopy(options))
    check_hook_options(cfg)
    return cfg


def accumulation(cfg: Config) -> int:
    return cfg.optim_wrapper.get("accumulative_counts", 1)


def batch_variants(recipe_config: Path) -> list[Path]:
    """The recipe and the configs beside it whose names differ from its name only
    in the ``<GPUs>xb<batch>[-accum<steps>]`` part."""
    match = BATCH_PART.search(recipe_config.name)
    if match is None:
        raise ValueError(f"{recipe_config.name} has no <GPUs>xb<batch> part in its name to find its batch variants")
    before, after = recipe_config.name[: match.start()], recipe_config.name[match.end() :]
    pattern = re.compile(re.escape(before) + BATCH_PART.pattern + re.escape(after))
    return sorted(p for p in recipe_config.parent.iterdir() if pattern.fullmatch(p.name))


def precision(cfg: Config) -> str:
    """The config's training precision in tools/train.py --amp terms."""
    if cfg.optim_wrapper.get("type") != "AmpOptimWrapper":
        return "none"
    dtype = cfg.optim_wrapper.get("dtype") or "float16"  # mmengine's AmpOptimWrapper default
    return {v: k for k, v in AMP_DTYPES.items()}.get(str(dtype), str(dtype))


def _lookup(cfg: Config, key: str):
    node = cfg.to_dict()
    for part in key.split("."):
        if isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return UNSET
    return node


def _plain(value):
    """Tuples as lists, so that a parsed option compares equal to the config's value."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def option_changes(config: Path, options: dict) -> list[str]:
    """The user's options whose value differs from ``config``'s, as "key: old -> new"."""
    base = read_config(config)
    changes = []
    for key, value in options.items():
        old = _lookup(base, key)
        if old is UNSET:
            changes.append(f"{key}: (unset) -> {value!r}")
        elif _plain(old) != _plain(value):
            changes.append(f"{key}: {old!r} -> {value!r}")
    return changes


def _rescaled_lr(cfg: Config, options: dict, batch: int, published: int) -> tuple[tuple[str, ...], str]:
    """cfg-options and a note for an lr that follows a changed effective batch:
    an lr given in the options stays; ``lr_scaling`` configs are rescaled by
    tools/train.py; an absolute lr is scaled here by the linear rule."""
    if LR_KEY in options:
        return (), f"lr {options[LR_KEY]!r} as given in --cfg-options, not rescaled"
    scaling = cfg.get("lr_scaling")
    if scaling:
        lr = scaling["base_lr"] * batch / scaling["base_batch_size"]
        return (), f"lr {lr:.4g} = lr_scaling {scaling['base_lr']:g} x {batch} / {scaling['base_batch_size']}"
    old = cfg.optim_wrapper.optimizer.lr
    new = old * batch / published
    return (f"{LR_KEY}={new!r}",), f"lr {old:g} -> {new:.4g} by the linear rule, x {batch} / {published}"


def _mismatch_message(preset: str, task: str, world_size: int, published: int, tried: list) -> str:
    recipe = PRESETS[preset][task]
    recipe_cfg = next(cfg for path, cfg, _ in tried if path == REPO / recipe.config)
    lines = [
        f"{task} ({preset} preset): the recipe {recipe.config} trains with an effective batch of {published} = "
        f"{recipe.gpus} GPUs x {recipe_cfg.train_dataloader.batch_size} per GPU x {accumulation(recipe_cfg)} "
        f"accumulation step(s). On {world_size} GPUs its configs give:"
    ]
    for path, cfg, batch in tried:
        lines.append(
            f"  {path.relative_to(REPO)}: {world_size} x {cfg.train_dataloader.batch_size} x "
            f"{accumulation(cfg)} = {batch}"
        )
    if published % world_size:
        lines.append(
            f"{published} / {world_size} = {published / world_size:.4g} is not a whole number: no split of the batch "
            f"over {world_size} GPUs reaches it. Use a number of GPUs that divides {published}"
        )
    else:
        per_gpu = published // world_size
        lines.append(
            f"{published} on {world_size} GPUs needs batch per GPU x accumulation = {published} / {world_size} = "
            f"{per_gpu}: add a config beside the recipe that inherits it and sets train_dataloader.batch_size and "
            f"optim_wrapper.accumulative_counts to that product (an iteration-based schedule also multiplies its "
            f"iteration counts by the accumulation), named with {world_size}xb<batch>-accum<steps> in place of "
            f"the recipe's {BATCH_PART.search(Path(recipe.config).name).group()}; or use another number of GPUs"
        )
    lines[-1] += "; or pass --allow-batch-change to train at another effective batch (lr rescaled, change recorded)."
    return "\n".join(lines)


def resolve_setup(
    preset: str,
    task: str,
    world_size: int,
    options: dict | None = None,
    allow_batch_change: bool = False,
    amp: str | None = None,
) -> Setup:
    """The config of ``task`` to run on ``world_size`` processes with the user's
    ``options``: among the recipe's batch variants, one whose effective batch is
    the published one (the fewest accumulation steps first, then the recipe
    itself). Without one, :class:`BatchMismatchError` with the arithmetic, or -
    ``allow_batch_change`` - the variant nearest to the published batch, its lr
    rescaled and the change listed. ``amp`` (tools/train.py --amp) is listed
    as a change where it differs from the config's precision."""
    if world_size < 1:
        raise ValueError(f"the number of GPUs must be at least 1, got {world_size}")
    options = options or {}
    recipe = PRESETS[preset][task]
    recipe_cfg = read_config(REPO / recipe.config)
    if "optim_wrapper" not in recipe_cfg:
        return _evaluation_setup(REPO / recipe.config, options)
    published = effective_batch_size(recipe_cfg, recipe.gpus)  # on the GPUs it was published for
    tried = []
    for path in batch_variants(REPO / recipe.config):
        cfg = load_config(path, options)
        tried.append((path, cfg, effective_batch_size(cfg, world_size)))
    matches = [t for t in tried if t[2] == published]
    changes: list[str] = []
    lr_options: tuple[str, ...] = ()
    if matches:
        path, cfg, batch = min(matches, key=lambda t: (accumulation(t[1]), t[0] != REPO / recipe.config))
    elif allow_batch_change:
        # nearest by ratio: 512 and 2048 are equally far from 1024
        path, cfg, batch = min(tried, key=lambda t: (abs(math.log(t[2] / published)), accumulation(t[1])))
        lr_options, lr_note = _rescaled_lr(cfg, options, batch, published)
        changes = [f"effective batch {batch} instead of the published {published}; {lr_note}"]
    else:
        raise BatchMismatchError(_mismatch_message(preset, task, world_size, published, tried))
    changes += option_changes(path, options)
    if amp is not None and amp != precision(cfg):
        changes.append(f"precision: {precision(cfg)} -> {amp} (--amp)")
    seed = cfg.get("randomness", {}).get("seed")
    return Setup(
        config=path,
        world_size=world_size,
        batch_per_gpu=cfg.train_dataloader.batch_size,
        accumulation=accumulation(cfg),
        effective_batch=batch,
        published_batch=published,
        lr_options=lr_options,
        changes=tuple(changes),
        seed=seed,
        loaders=_loaders(cfg),
    )


def _loaders(cfg: Config) -> tuple[str, ...]:
    return tuple(name for name in ("train_dataloader", "val_dataloader", "test_dataloader") if name in cfg)


def _evaluation_setup(config: Path, options: dict) -> Setup:
    """A protocol that trains nothing (k-NN, logistic regression on frozen
    features): one process, whatever the GPUs; its batch is the feature
    extraction's, which changes no number."""
    cfg = load_config(config, options)
    batch = cfg.train_dataloader.batch_size
    return Setup(
        config=config,
        world_size=1,
        batch_per_gpu=batch,
        accumulation=1,
        effective_batch=batch,
        published_batch=batch,
        lr_options=(),
        changes=tuple(option_changes(config, options)),
        seed=cfg.get("randomness", {}).get("seed"),
        loaders=_loaders(cfg),
    )
