"""One command from a checkpoint to every downstream number.

    python tools/run_suite.py --checkpoint FILE --preset mini|real|full [--tasks finetune,linprobe,ade20k,coco]
                              [--data imagenet=DIR ade20k=DIR coco=DIR robustness=DIR] [--gpus N] [--amp bf16|fp16|none]
                              [--seeds 0,1,2] [--cfg-options k=v ...] [--allow-batch-change]
                              [--out DIR] [--label NAME]
    python tools/run_suite.py ... --launcher slurm --partition P [--nodes M] [--sbatch-args="--time=2-0"]
    python tools/run_suite.py --collect [--out DIR]

FILE: anything tools/convert_checkpoint.py understands (converted once), a
canonical .safetensors file, or random:<arch> (e.g. random:tiny) for a
random-init control. Results go to OUT/results/*.json, one record per task and
seed; runs already recorded for the same weights, preset, config, options,
batch (GPUs x batch per GPU x accumulation) and seed are skipped, so an
interrupted suite resumes where it stopped. mini = ViT-tiny recipes on small
synthetic data (tools/generate_datasets.py imagenet|ade20k|coco); real = the full
recipes shrunk to a ViT-micro (8 px patches) on the real-image datasets
(tools/generate_datasets.py realsuite DIR; --data imagenet=DIR/imagenet
ade20k=DIR/ade coco=DIR/coco); full = the paper's ViT-B recipes.

Tasks: the paper's finetune, linprobe, ade20k, coco (the default); knn and lowshot
(frozen features, extracted once into OUT/features and shared), attentive (CAE's
attentive probe), ade20k-linear (DINOv2's linear head on frozen features);
ade20k-msflip (the ade20k task's checkpoint tested multi-scale + flip) and
robustness (the finetune task's best checkpoint on ImageNet-A/-R/-Sketch/-V2/-C),
which run after the task they read.

Each task runs the config that keeps its recipe's published effective batch on
--gpus x --nodes GPUs (accumulating where there are fewer); another batch is
refused, with the arithmetic, unless --allow-batch-change (lr rescaled, the
change recorded). --launcher slurm submits one sbatch job per task and seed and
returns; --collect records the jobs that finished and lists the others.
"""

import argparse
import shlex
import sys
from pathlib import Path

from suite.runner import ALL_TASKS, DATA_NAMES, PRESETS, TASKS, run_suite
from suite.slurm import SlurmResources, collect, submit_suite


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text}: a seed is given twice")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="required unless --collect")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"comma-separated tasks among {','.join(ALL_TASKS)} (default: the paper's {','.join(TASKS)}); "
        "ade20k-msflip tests the ade20k task's checkpoint and robustness the finetune task's, so they need them",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="dataset roots: imagenet=DIR (train/ val/), ade20k=DIR (holds ADEChallengeData2016), "
        "coco=DIR (annotations/, train2017/, val2017/), robustness=DIR (imagenet-a/, imagenet-r/, sketch/, "
        "imagenetv2-matched-frequency-format-val/, imagenet-c/)",
    )
    parser.add_argument(
        "--gpus", type=int, default=1, help="GPUs per node for each task (locally: torchrun via tools/dist_train.sh)"
    )
    parser.add_argument("--nodes", type=int, default=1, help="nodes per task (--launcher slurm only)")
    parser.add_argument(
        "--allow-batch-change",
        action="store_true",
        help="where no config keeps the published effective batch on these GPUs, train at the nearest one, "
        "with the lr rescaled (linear rule, or the config's lr_scaling); the change is recorded",
    )
    parser.add_argument(
        "--seeds", type=parse_seeds, help="run each task once per seed (randomness.seed; default: the config's)"
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every task's tools/train.py as given (part of the record key), "
        "e.g. optim_wrapper.optimizer.lr=3e-4",
    )
    parser.add_argument("--out", default="runs/suite", help="results store and work dirs")
    parser.add_argument("--label", help="name of this checkpoint in the report (default: its pretraining method)")
    parser.add_argument("--select", choices=["student", "teacher"], default="student")
    parser.add_argument("--trust-pickle", action="store_true")
    parser.add_argument(
        "--amp",
        choices=["bf16", "fp16", "none"],
        help="precision for every task (tools/train.py --amp; default: each config's own, which is bf16 for "
        "the real and full presets and needs a GPU; none = fp32, e.g. on a CPU)",
    )
    slurm = parser.add_argument_group("SLURM")
    slurm.add_argument("--launcher", choices=["local", "slurm"], default="local")
    slurm.add_argument("--partition", help="the partition to submit to (--launcher slurm)")
    slurm.add_argument(
        "--cpus-per-task", type=int, default=None, help="CPU cores per GPU process for data loading (default 10)"
    )
    slurm.add_argument(
        "--sbatch-args",
        default="",
        help='further sbatch options for every job, given with "=": --sbatch-args="--time=2-00:00:00 --account=X"',
    )
    slurm.add_argument(
        "--collect",
        action="store_true",
        help="record the submitted jobs that finished (result.json of the last iteration); list the others",
    )
    return parser


def parse_data(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Path]:
    data = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in DATA_NAMES:
            parser.error(f"--data takes NAME=DIR with NAME one of {', '.join(DATA_NAMES)}; got {item!r}")
        data[name] = Path(path).resolve()
    return data


def report_collection(out: Path) -> int:
    """Record finished SLURM jobs; exit status 1 if any failed or is unknown."""
    found = collect(out)
    for record in found.recorded:
        print(f"[collect] recorded {record['task']} seed {record['seed']} (job {record['slurm_job_id']})")
    for entry, state in found.pending:
        print(f"[collect] {state.lower()}: {entry['task']} seed {entry['seed']} (job {entry['job_id']})")
    for entry, why in found.failed:
        print(f"[collect] NOT recorded: {entry['task']} seed {entry['seed']} (job {entry['job_id']}): {why}")
    print(
        f"[collect] {len(found.recorded)} recorded now, {found.already_recorded} recorded before, "
        f"{len(found.pending)} pending or running, {len(found.failed)} failed or incomplete; "
        f"results in {out / 'results'}"
    )
    return 1 if found.failed else 0


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.collect:
        try:
            return report_collection(out)
        except (FileNotFoundError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if not args.checkpoint:
        parser.error("--checkpoint is required (unless --collect)")
    if args.launcher == "slurm" and not args.partition:
        parser.error("--launcher slurm needs --partition")
    if args.launcher == "local" and (args.partition or args.sbatch_args or args.cpus_per_task is not None):
        parser.error("--partition, --sbatch-args and --cpus-per-task are for --launcher slurm")
    if args.launcher == "local" and args.nodes != 1:
        parser.error(
            "--nodes needs --launcher slurm: the local launcher starts torchrun on this machine only "
            "(or run tools/dist_train.sh on each node, see the README)"
        )
    if args.gpus < 1 or args.nodes < 1:
        parser.error(f"--gpus and --nodes must be at least 1; got {args.gpus} and {args.nodes}")
    data = parse_data(parser, args.data)
    tasks = tuple(args.tasks.split(","))
    common = dict(
        label=args.label,
        select=args.select,
        trust_pickle=args.trust_pickle,
        amp=args.amp,
        seeds=args.seeds,
        cfg_options=args.cfg_options,
        allow_batch_change=args.allow_batch_change,
    )
    try:
        if args.launcher == "slurm":
            resources = SlurmResources(
                args.partition, args.nodes, args.gpus, args.cpus_per_task or 10, tuple(shlex.split(args.sbatch_args))
            )
            record = submit_suite(args.checkpoint, out, args.preset, tasks, data, resources, **common)
            if record:
                print(f"[suite] submitted; jobs listed in {record}. Later: {sys.argv[0]} --collect --out {out}")
            return 0
        run_suite(args.checkpoint, out, args.preset, tasks, data, args.gpus, **common)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[suite] results in {out / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
