"""Train from an mmengine config: one entry point for every stage of the suite.

    python tools/train.py CONFIG [--work-dir DIR] [--backbone FILE.safetensors] [--amp bf16|fp16|none]
                          [--resume [CHECKPOINT] | --no-resume] [--cfg-options k=v ...]

By default a run continues from the newest intact checkpoint in its work dir.
Multi-GPU / multi-node: tools/dist_train.sh (torchrun) or tools/slurm_train.sh.
A config with runner_type = "FlexibleRunner" and a strategy (FSDP: FullyShardStrategy)
runs under mmengine's FlexibleRunner, any other under its Runner (DDP).
"""

import argparse
import contextlib
import os
import os.path as osp
from pathlib import Path

import torch.distributed as dist
from mmengine.config import DictAction
from mmengine.registry import RUNNERS

from pretrain.engine.lock import WorkDirBusyError, hold_lock
from pretrain.engine.resume import NoIntactCheckpointError, checkpoint_folder, choose_auto_resume, remove_partial_files
from pretrain.engine.runtime import check_train_dataloader, prepare_config, process_rank


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="mmengine config file")
    parser.add_argument("--work-dir", help="logs and checkpoints (default: work_dirs/<config name>)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default="auto",
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT (default: the work dir's latest checkpoint, if any)",
    )
    resume.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start from scratch even if the work dir holds checkpoints",
    )
    parser.add_argument(
        "--amp",
        choices=["bf16", "fp16", "none"],
        help="override the config's precision (bf16/fp16 autocast need a GPU)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default={},
        help="override config entries, e.g. train_dataloader.dataset.data_root=/data/in1k",
    )
    parser.add_argument(
        "--backbone", metavar="FILE.safetensors", help="downstream stages: the canonical backbone file to start from"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="stretch the config's epoch schedule to N epochs (run length, schedulers ending with it, "
        "validation interval); a bare cfg-option train_cfg.max_epochs would leave the schedulers as they are",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        cfg, lr_line = prepare_config(
            args.config,
            args.work_dir,
            args.resume,
            args.amp,
            args.cfg_options,
            args.launcher,
            args.backbone,
            args.epochs,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    with contextlib.ExitStack() as held:
        if process_rank(args.launcher) == 0:  # one trainer per work dir; the other ranks share rank 0's
            try:
                held.enter_context(hold_lock(Path(cfg.work_dir) / ".train.lock", f"tools/train.py {args.config}"))
            except WorkDirBusyError as err:
                raise SystemExit(f"error: {err}") from None
            for folder in {Path(cfg.work_dir), checkpoint_folder(cfg)}:  # under the lock: nobody writes there
                remove_partial_files(folder)
        try:
            choose_auto_resume(cfg)  # the newest intact checkpoint of this work dir, if resume is automatic
        except NoIntactCheckpointError as err:
            raise SystemExit(f"error: {err}") from None
        runner = RUNNERS.build(cfg)  # cfg.runner_type: Runner (default, DDP) or FlexibleRunner (its strategy)
        runner.logger.info(lr_line)
        runner.logger.info(f"work dir: {osp.abspath(cfg.work_dir)} (pid {os.getpid()})")
        try:
            check_train_dataloader(runner)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        runner.train()
        if dist.is_initialized():
            # Leaving with a live gloo group can abort this process ("terminate called without an
            # active exception") while another rank still writes its checkpoint; torchrun then kills it.
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
