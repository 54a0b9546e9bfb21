"""Evaluate a trained checkpoint with its config's test loop (any stage).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--backbone FILE] [--tta] [--cfg-options k=v ...]
    python tools/test.py CONFIG WORK_DIR --select-checkpoint best|last ...

CHECKPOINT is a file tools/train.py wrote, or its work dir with the checkpoint to take:
``best`` (the one the checkpoint hook's save_best kept) or ``last`` (the run's final weights).

Writes the metrics to WORK_DIR/result.json with their provenance. ``--tta`` tests with
the config's test-time augmentation (segmentation: multi-scale + flip): the test
pipeline becomes ``tta_pipeline`` and the model is wrapped in ``tta_model``, as
mmseg's own tools/test.py does; the record then says so in its ``tta`` field.
"""

import argparse
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.model import BaseTTAModel
from mmengine.runner import Runner

from pretrain.checkpoints import UnreadableCheckpointError
from pretrain.engine.hooks import unwrap_model
from pretrain.engine.runtime import prepare_config
from pretrain.engine.weights import SELECTIONS, CheckpointMismatchError, check_checkpoint_matches, trained_checkpoint


def _augmentations(cfg: Config) -> list[list[dict]]:
    """The transform groups of ``tta_pipeline``'s ``TestTimeAug`` (each pass takes one of each)."""
    steps = [step for step in cfg.tta_pipeline if step.get("type") == "TestTimeAug"]
    if len(steps) != 1:
        raise ValueError(f"tta_pipeline must hold one TestTimeAug step, found {len(steps)}")
    return steps[0]["transforms"]


def tta_description(cfg: Config) -> dict:
    """What the ``tta`` field of the record says: the ratios (``tta_ratios``), the
    resizes and flips of the passes and their number."""
    groups = _augmentations(cfg)
    resizes = [t for group in groups for t in group if "Resize" in t.get("type", "")]
    flips = [t for group in groups for t in group if t.get("type") == "RandomFlip"]
    passes = 1
    for group in groups:
        passes *= len(group)
    return {
        "ratios": list(cfg.get("tta_ratios", [])),
        "flip": any(t.get("prob", 0) > 0 for t in flips),
        "resizes": [dict(t) for t in resizes],
        "passes": passes,
    }


def apply_tta(cfg: Config) -> dict:
    """Turn ``cfg`` into its test-time-augmented test (mmseg 1.x tools/test.py: test
    pipeline = ``tta_pipeline``, ``tta_model.module`` = the model, model = ``tta_model``);
    returns :func:`tta_description`. A config without them is an error naming what to add."""
    missing = [key for key in ("tta_model", "tta_pipeline") if key not in cfg]
    if missing:
        raise ValueError(
            f"--tta needs {' and '.join(missing)} in the config ({cfg.filename}); segmentation configs inherit "
            "them from segmentation/configs/_base_ (datasets/ade20k.py, default_runtime.py)"
        )
    description = tta_description(cfg)
    records = [hook for hook in cfg.get("custom_hooks", []) if hook.get("type") == "ResultsRecordHook"]
    if not records:
        raise ValueError(f"{cfg.filename} has no ResultsRecordHook in custom_hooks: nothing would record the test")
    for hook in records:  # the record says how the test was augmented
        hook["extra"] = {**hook.get("extra", {}), "tta": description}
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    return description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py for this config, or its work dir")
    parser.add_argument(
        "--select-checkpoint",
        choices=SELECTIONS,
        help="CHECKPOINT is a work dir: test its best (save_best) or last checkpoint",
    )
    parser.add_argument("--work-dir", help="where the log and result.json go (default: work_dirs/<config>/test)")
    parser.add_argument(
        "--backbone",
        metavar="FILE.safetensors",
        help="canonical backbone the model is built from (its weights are then replaced)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test with the config's tta_pipeline and tta_model (segmentation: multi-scale + flip)",
    )
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    args = parser.parse_args()
    try:
        args.checkpoint = str(trained_checkpoint(args.checkpoint, args.select_checkpoint))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    work_dir = args.work_dir or osp.join("work_dirs", osp.splitext(osp.basename(args.config))[0], "test")
    try:
        # Evaluation never uses the optimizer wrapper: on a CPU-only machine an
        # AMP training config must not stop the test.
        amp = None if torch.cuda.is_available() else "none"
        cfg, _ = prepare_config(args.config, work_dir, False, amp, args.cfg_options, args.launcher, args.backbone)
        if args.tta:
            apply_tta(cfg)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    cfg.load_from = args.checkpoint
    # The plain Runner also for FlexibleRunner (FSDP) configs: their checkpoints are whole files
    # with the plain Runner's keys, and evaluation needs no sharding.
    runner = Runner.from_cfg(cfg)
    # the TTA wrapper holds the trained model as .module (mmengine loads the weights into it)
    model = unwrap_model(runner.model)
    model = model.module if isinstance(model, BaseTTAModel) else model
    try:
        check_checkpoint_matches(model, args.checkpoint)
    except (CheckpointMismatchError, UnreadableCheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    runner.test()


if __name__ == "__main__":
    main()
