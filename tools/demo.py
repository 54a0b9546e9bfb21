"""The embedded default, end to end on CPU: build the real-image datasets (pixels
shipped inside scikit-learn and scikit-image, written in the ImageNet, ADE20K and
COCO layouts), pretrain a ViT-micro SdAE (published teacher: 300 EMA updates) and
MAE with one budget, run the real preset of the suite (fine-tune, linear probe,
ADE20K-layout segmentation, COCO-layout detection and instance segmentation) on
both and on the random-init control they start from, and print the report.

    python tools/demo.py [--out runs/demo] [--seed 0] [--jobs 2] [--tasks finetune,linprobe,ade20k,coco]
                         [--pretrain-epochs N]

This is tools/benchmark_discrimination.py with one seed and without the per-epoch
SdAE variant; the benchmark runs three seeds.
"""

import argparse
import sys
import time
from pathlib import Path

from studies.discrimination import CONTROL, default_amp, markdown_table, run, write_outputs
from suite.report import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="run directory (data, checkpoints, results, report)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=2, help="training processes at once (each gets CPUs / jobs threads)"
    )
    parser.add_argument("--tasks", default="finetune,linprobe,ade20k,coco", help="a subset of the real preset's tasks")
    parser.add_argument("--pretrain-epochs", type=int, help="stretch the pretraining schedule (default: the configs')")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    start = time.time()
    try:
        result = run(
            out,
            [args.seed],
            (CONTROL, "mae", "sdae"),
            tuple(args.tasks.split(",")),
            amp=default_amp(),
            jobs=args.jobs,
            say=lambda message: print(f"[demo] {message}", flush=True),
            pretrain_epochs=args.pretrain_epochs,
        )
    except (FileExistsError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = write_outputs(result, out)
    report = write_report(out / "suite/results", out / "report")
    print(report.read_text())
    print(markdown_table(result))
    print(f"[demo] done in {time.time() - start:.0f}s")
    print(f"[demo] report: {report}; pretrained vs random-init: {paths['table']} and {paths['plot']}")
    print(f"[demo] TensorBoard: tensorboard --logdir {out}")
    print(f"[demo] run directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
