"""Is the real preset's COCO-layout task learnable at its scale, and from which
starting point? Trains, with one schedule on the same data, the real preset's
Mask R-CNN with a ResNet-18 from scratch (the reference), with the random-init
ViT-micro the suite uses as its control, and with any ViT-micro backbone file you
add, and with the random-init ViT-micro under config changes you name (--vit-variant),
and writes box / mask AP and the largest FPN output std per detector over the seeds
(studies/detection_learnability.py).

    python tools/benchmark_detection_learnability.py [--seeds 0] [--epochs 4] [--jobs 2]
                                                     [--backbone NAME=FILE.safetensors ...]
                                                     [--vit-variant NAME KEY=VALUE ... ]
                                                     [--out runs/detection-learnability] [--data DIR]

Outputs: OUT/{results.json,table.md}; one record per run under OUT/records/ (reused
on rerun), the runs' logs under OUT/runs/.
"""

import argparse
import sys
from pathlib import Path

from studies.detection_learnability import markdown_table, run


def backbone_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.safetensors, got {text!r}")
    return name, Path(path).resolve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--epochs", type=int, default=4, help="every detector's schedule, stretched to N epochs (default: the preset's)"
    )
    parser.add_argument("--backbone", type=backbone_arg, nargs="+", default=[], metavar="NAME=FILE")
    parser.add_argument(
        "--vit-variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a row of the random-init ViT-micro with these cfg-options (repeatable), e.g. "
        "--vit-variant gn-fpn model.neck.norm_cfg.type=GN model.neck.norm_cfg.num_groups=8",
    )
    parser.add_argument("--out", default="runs/detection-learnability")
    parser.add_argument("--data", help="real-suite data folder (default: OUT/data; built if absent)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="training processes at once (each gets CPUs / jobs threads)"
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    try:
        result = run(
            out,
            args.seeds,
            args.epochs,
            dict(args.backbone),
            {name: tuple(options) for name, *options in args.vit_variant},
            Path(args.data).resolve() if args.data else None,
            args.jobs,
            say=lambda message: print(f"[detection] {message}", flush=True),
        )
    except (FileExistsError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = markdown_table(result)
    (out / "table.md").write_text(table)
    print(table)
    print(f"[detection] {len(result['records'])} runs in {result['wall_time_s']:.0f}s; table {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
