"""Evaluate a trained checkpoint with its config's test loop (any stage).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--backbone FILE] [--cfg-options k=v ...]

Writes the metrics to WORK_DIR/result.json with their provenance.
"""

import argparse
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.runner import Runner

from pretrain.checkpoints import UnreadableCheckpointError
from pretrain.engine.runtime import prepare_config
from pretrain.engine.weights import CheckpointMismatchError, check_checkpoint_matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py for this config")
    parser.add_argument("--work-dir", help="where the log and result.json go (default: work_dirs/<config>/test)")
    parser.add_argument(
        "--backbone",
        metavar="FILE.safetensors",
        help="canonical backbone the model is built from (its weights are then replaced)",
    )
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    args = parser.parse_args()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f"error: checkpoint not found: {args.checkpoint}")
    work_dir = args.work_dir or osp.join("work_dirs", osp.splitext(osp.basename(args.config))[0], "test")
    try:
        # Evaluation never uses the optimizer wrapper: on a CPU-only machine an
        # AMP training config must not stop the test.
        amp = None if torch.cuda.is_available() else "none"
        cfg, _ = prepare_config(args.config, work_dir, False, amp, args.cfg_options, args.launcher, args.backbone)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    cfg.load_from = args.checkpoint
    # The plain Runner also for FlexibleRunner (FSDP) configs: their checkpoints are whole files
    # with the plain Runner's keys, and evaluation needs no sharding.
    runner = Runner.from_cfg(cfg)
    try:
        check_checkpoint_matches(runner.model, args.checkpoint)
    except (CheckpointMismatchError, UnreadableCheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    runner.test()


if __name__ == "__main__":
    main()
