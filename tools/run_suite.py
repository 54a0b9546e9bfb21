"""One command from a checkpoint to every downstream number.

    python tools/run_suite.py --checkpoint FILE --preset mini|real|full [--tasks finetune,linprobe,ade20k,coco]
                              [--data imagenet=DIR ade20k=DIR coco=DIR] [--gpus N] [--amp bf16|fp16|none]
                              [--out DIR] [--label NAME]

FILE: anything tools/convert_checkpoint.py understands (converted once), a
canonical .safetensors file, or random:<arch> (e.g. random:tiny) for a
random-init control. Results go to OUT/results/*.json, one record per task;
tasks already recorded for the same weights, preset and config are skipped, so
an interrupted suite resumes where it stopped. mini = ViT-tiny recipes on small
synthetic data (tools/generate_datasets.py imagenet|ade20k|coco); real = the full
recipes shrunk to a ViT-micro (8 px patches) on the real-image datasets
(tools/generate_datasets.py realsuite DIR; --data imagenet=DIR/imagenet
ade20k=DIR/ade coco=DIR/coco); full = the paper's ViT-B recipes.
"""

import argparse
import sys
from pathlib import Path

from suite.runner import PRESETS, TASKS, run_suite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="dataset roots: imagenet=DIR (train/ val/), ade20k=DIR (holds ADEChallengeData2016), "
        "coco=DIR (annotations/, train2017/, val2017/)",
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per task (torchrun via tools/dist_train.sh)")
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
    args = parser.parse_args()
    data = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep or name not in ("imagenet", "ade20k", "coco"):
            parser.error(f"--data takes imagenet=DIR, ade20k=DIR or coco=DIR; got {item!r}")
        data[name] = Path(path).resolve()
    try:
        run_suite(
            args.checkpoint,
            Path(args.out).resolve(),
            args.preset,
            tuple(args.tasks.split(",")),
            data,
            args.gpus,
            args.label,
            args.select,
            args.trust_pickle,
            args.amp,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[suite] results in {Path(args.out).resolve() / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
