"""Run-time adjustments of an mmengine config shared by every stage's
``tools/train.py`` run: learning-rate scaling to the real batch, AMP choice,
CPU-only distributed runs."""

import os
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.config import Config

from .config_checks import check_cfg_options, check_hook_options
from .config_io import read_config

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def process_rank(launcher: str) -> int:
    """This process's global rank as its launcher set it (0 without one)."""
    if launcher == "none":
        return 0
    return int(os.environ["RANK"] if launcher == "pytorch" else os.environ["SLURM_PROCID"])


def check_train_dataloader(runner) -> None:
    """Refuse a training set that yields no batch (fewer samples than one batch
    with ``drop_last``): mmengine would start a run of zero iterations."""
    loader = runner.train_dataloader
    if len(loader) == 0:
        spec = runner.cfg.train_dataloader.dataset
        while "dataset" in spec:  # wrappers such as RepeatDataset
            spec = spec.dataset
        where = " ".join(str(spec[k]) for k in ("data_root", "split", "ann_file") if spec.get(k))
        raise ValueError(
            f"the training set ({spec.type}: {where}) has {len(loader.dataset)} sample(s), fewer than one batch of "
            f"{loader.batch_size} per process with drop_last: no training step would run. "
            "Use more data or a smaller train_dataloader.batch_size."
        )


def world_size_from_env(launcher: str) -> int:
    if launcher == "none":
        return 1
    if launcher == "pytorch":
        return int(os.environ["WORLD_SIZE"])
    if launcher == "slurm":
        return int(os.environ["SLURM_NTASKS"])
    raise ValueError(f"unknown launcher {launcher!r}; use none, pytorch or slurm")


def effective_batch_size(cfg: Config, world_size: int) -> int:
    """Images per optimizer step: GPUs x batch per GPU x accumulation steps."""
    accumulation = cfg.optim_wrapper.get("accumulative_counts", 1)
    return world_size * cfg.train_dataloader.batch_size * accumulation


def apply_lr_scaling(cfg: Config, world_size: int, explicit_lr: bool = False) -> str:
    """Sets ``optimizer.lr = base_lr * effective batch / base_batch_size`` when the
    config has ``lr_scaling`` (the MAE/SdAE rule) and the lr was not given
    explicitly (``explicit_lr``: ``--cfg-options optim_wrapper.optimizer.lr=...``,
    which then wins); returns a line for the log."""
    batch = effective_batch_size(cfg, world_size)
    accumulation = cfg.optim_wrapper.get("accumulative_counts", 1)
    how = f"{world_size} process(es) x {cfg.train_dataloader.batch_size} x {accumulation} accumulation"
    scaling = cfg.get("lr_scaling")
    if explicit_lr and scaling:
        return (
            f"effective batch {batch} ({how}); lr {cfg.optim_wrapper.optimizer.lr:.4g} as given in --cfg-options "
            f"(lr_scaling not applied; set lr_scaling.base_lr instead to keep the batch rule)"
        )
    if not scaling:
        return f"effective batch {batch} ({how}); absolute lr {cfg.optim_wrapper.optimizer.lr:.4g}"
    lr = scaling["base_lr"] * batch / scaling["base_batch_size"]
    cfg.optim_wrapper.optimizer.lr = lr
    return (
        f"effective batch {batch} ({how}); lr = {scaling['base_lr']:.4g} x {batch} / "
        f"{scaling['base_batch_size']} = {lr:.4g}"
    )


def apply_amp(cfg: Config, amp: str | None) -> None:
    """``amp``: None keeps the config's choice; "bf16"/"fp16" autocast; "none" fp32."""
    if amp is None:
        pass
    elif amp == "none":
        cfg.optim_wrapper.type = "OptimWrapper"
        cfg.optim_wrapper.pop("dtype", None)
        cfg.optim_wrapper.pop("loss_scale", None)
    elif amp in AMP_DTYPES:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.dtype = AMP_DTYPES[amp]
        # fp16 needs dynamic loss scaling; bf16 has float32's exponent range and needs
        # none (a scaler would only skip steps and write the optimizer's skip flag)
        cfg.optim_wrapper.loss_scale = "dynamic" if amp == "fp16" else dict(enabled=False)
    else:
        raise ValueError(f"--amp must be bf16, fp16 or none, got {amp!r}")
    if cfg.optim_wrapper.type == "AmpOptimWrapper" and not torch.cuda.is_available():
        raise RuntimeError(
            "this config trains with mixed precision (AmpOptimWrapper), which needs a CUDA GPU; "
            "none is visible. Pass --amp none to train in fp32 on the CPU."
        )


def check_teacher_updates(cfg: Config) -> None:
    """An SdAE model without a TeacherEMAHook would distil from a teacher that
    never changes; refuse that configuration instead of training it silently."""
    model = cfg.get("model", {})
    if model.get("type") != "SdAEPretrainer" or model.get("target", "teacher") != "teacher":
        return
    if not any(hook.get("type") == "TeacherEMAHook" for hook in cfg.get("custom_hooks", [])):
        raise ValueError(
            "this SdAE config has a teacher but no TeacherEMAHook in custom_hooks, so the teacher "
            "would never be updated; add dict(type='TeacherEMAHook', ...) (momentum=1.0 keeps it "
            "frozen on purpose)"
        )


RUNNER_TYPES = ("Runner", "FlexibleRunner")


def check_runner_choice(cfg: Config) -> None:
    """``runner_type`` picks mmengine's ``Runner`` (the default: DDP) or its
    ``FlexibleRunner``, which distributes the model as its ``strategy`` says
    (FSDP: ``FullyShardStrategy``). Refuse settings that one of them would ignore
    and mmengine's FSDP1 strategy, which would train this project's models wrongly."""
    runner_type = cfg.get("runner_type", "Runner")
    if runner_type not in RUNNER_TYPES:
        raise ValueError(f"runner_type must be one of {', '.join(RUNNER_TYPES)}, got {runner_type!r}")
    strategy = cfg.get("strategy")
    if runner_type == "Runner":
        if strategy is not None:
            raise ValueError(
                "this config sets a strategy, which only FlexibleRunner reads: add runner_type = 'FlexibleRunner' "
                "(or remove strategy to train with the plain Runner and DDP)"
            )
        return
    if cfg.get("model_wrapper_cfg") is not None:
        raise ValueError("FlexibleRunner ignores model_wrapper_cfg; its strategy wraps the model")
    if strategy is not None and strategy.get("type") == "FSDPStrategy":
        raise ValueError(
            "mmengine's FSDPStrategy (FSDP1) flattens every parameter to a 1-D shard outside forward: the "
            "optimizer constructors of this project choose weight decay by parameter dimension and would decay "
            "none, and the EMA teacher would read student shards. Use strategy=dict(type='FullyShardStrategy', "
            "...) (FSDP2; see pretrain/engine/fsdp.py)"
        )


def prepare_cpu_distributed(cfg: Config, launcher: str) -> None:
    """mmengine's launchers assume one GPU per process. Without GPUs, join the
    torchrun process group over gloo here and wrap the model without device ids
    (FlexibleRunner: only with FullyShardStrategy, which places the model itself)."""
    if launcher == "none" or torch.cuda.is_available():
        return
    if launcher != "pytorch":
        raise RuntimeError(f"launcher {launcher!r} needs GPUs; CPU-only runs support --launcher pytorch")
    if cfg.get("runner_type", "Runner") == "FlexibleRunner":
        strategy = (cfg.get("strategy") or {}).get("type", "DDPStrategy")
        if strategy != "FullyShardStrategy":
            raise RuntimeError(
                f"without GPUs FlexibleRunner runs only with FullyShardStrategy; {strategy} places the model "
                "on GPU LOCAL_RANK"
            )
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    # For the plain Runner (tools/test.py evaluates FlexibleRunner configs with it too); FlexibleRunner ignores it.
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)


def set_epochs(cfg: Config, epochs: int) -> None:
    """Stretch an epoch-based schedule to ``epochs``: the run length, every scheduler
    that ended with the run (warm-up is kept) with its epoch milestones scaled in
    proportion (a step at 9 of 12 epochs is at 18 of 24), and a validation interval
    that was the run length."""
    old = cfg.train_cfg.get("max_epochs")
    if old is None:
        raise ValueError("--epochs needs an epoch-based schedule (train_cfg.max_epochs); this config has none")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    cfg.train_cfg.max_epochs = epochs
    if cfg.train_cfg.get("val_interval") == old:
        cfg.train_cfg.val_interval = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.get("end") == old:
            if scheduler.get("begin", 0) >= epochs:
                raise ValueError(
                    f"{epochs} epochs leave no room for {scheduler['type']} starting at epoch {scheduler['begin']}"
                )
            scheduler["end"] = epochs
            if "T_max" in scheduler:
                scheduler["T_max"] = epochs - scheduler.get("begin", 0)
            if "milestones" in scheduler and scheduler.get("by_epoch", True):
                scheduler["milestones"] = _scaled_milestones(scheduler["milestones"], old, epochs)


def _scaled_milestones(milestones: list[int], old: int, epochs: int) -> list[int]:
    """Step milestones moved with the run length; two that would fall on one epoch
    raise rather than silently merge into one larger step."""
    scaled = [max(1, round(m * epochs / old)) for m in milestones]
    if len(set(scaled)) != len(scaled) or any(m >= epochs for m in scaled):
        raise ValueError(
            f"{epochs} epochs are too few for the steps at epochs {list(milestones)} of {old}: "
            f"they would fall at {scaled}"
        )
    return scaled


def prepare_config(
    config: str,
    work_dir: str | None = None,
    resume: str | bool = "auto",
    amp: str | None = None,
    cfg_options: dict | None = None,
    launcher: str = "none",
    backbone: str | None = None,
    epochs: int | None = None,
) -> tuple[Config, str]:
    """Everything ``tools/train.py`` does before building the Runner.

    ``resume``: "auto" (the config's choice, by default the work dir's latest
    checkpoint), False (start over) or a checkpoint path. ``backbone``: a
    canonical backbone file for ``model.backbone.checkpoint`` (downstream
    stages). ``epochs``: stretch the epoch schedule (:func:`set_epochs`).
    Returns the config and the learning-rate line for the log.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f"config file not found: {config}")
    cfg = read_config(config)
    cfg_options = cfg_options or {}
    check_cfg_options(cfg, cfg_options)
    cfg.merge_from_dict(cfg_options)
    check_hook_options(cfg)
    if epochs is not None:
        set_epochs(cfg, epochs)
    if backbone is not None:
        if "backbone" not in cfg.get("model", {}):
            raise ValueError(f"{config} has no model.backbone to load {backbone} into")
        if not osp.isfile(backbone):
            raise FileNotFoundError(f"backbone file not found: {backbone}")
        cfg.model.backbone.checkpoint = backbone
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get("work_dir") or osp.join("work_dirs", osp.splitext(osp.basename(config))[0])
    if resume is False:
        cfg.resume = False
    elif resume != "auto":
        if not osp.isfile(resume):
            raise FileNotFoundError(f"checkpoint to resume from not found: {resume}")
        cfg.resume, cfg.load_from = True, resume
    check_teacher_updates(cfg)
    check_runner_choice(cfg)
    apply_amp(cfg, amp)
    prepare_cpu_distributed(cfg, launcher)
    explicit_lr = "optim_wrapper.optimizer.lr" in cfg_options
    return cfg, apply_lr_scaling(cfg, world_size_from_env(launcher), explicit_lr)
