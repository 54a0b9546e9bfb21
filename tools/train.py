"""Train from an mmengine config: one entry point for every stage of the suite.

    python tools/train.py CONFIG [--work-dir DIR] [--amp bf16|fp16|none]
                          [--resume [CHECKPOINT] | --no-resume] [--cfg-options k=v ...]

Multi-GPU / multi-node: tools/dist_train.sh (torchrun) or tools/slurm_train.sh.
"""

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from pretrain.engine.runtime import (
    apply_amp,
    apply_lr_scaling,
    prepare_cpu_distributed,
    world_size_from_env,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="mmengine config file")
    parser.add_argument("--work-dir", help="logs and checkpoints (default: work_dirs/<config name>)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or from the work dir's latest one (the default)")
    resume.add_argument("--no-resume", action="store_true", help="start from scratch even if the work dir has checkpoints")
    parser.add_argument("--amp", choices=["bf16", "fp16", "none"],
                        help="override the config's precision (bf16/fp16 autocast need a GPU)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config entries, e.g. train_dataloader.dataset.data_root=/data/in1k")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f"config file not found: {args.config}")
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0]
    )
    if args.no_resume:
        cfg.resume = False
    elif args.resume not in (None, "auto"):
        if not osp.isfile(args.resume):
            raise SystemExit(f"checkpoint to resume from not found: {args.resume}")
        cfg.resume, cfg.load_from = True, args.resume
    apply_amp(cfg, args.amp)
    prepare_cpu_distributed(cfg, args.launcher)
    scaling = apply_lr_scaling(cfg, world_size_from_env(args.launcher))

    runner = Runner.from_cfg(cfg)
    runner.logger.info(scaling)
    runner.logger.info(f"work dir: {osp.abspath(cfg.work_dir)} (pid {os.getpid()})")
    runner.train()


if __name__ == "__main__":
    main()
