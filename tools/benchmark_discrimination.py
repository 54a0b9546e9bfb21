"""The discrimination benchmark: does the real-image mini suite tell a pretrained
ViT from a random one? For each seed, pretrain SdAE (published teacher: 300 EMA
updates over the run) and MAE with one budget (optionally also SdAE with a
once-per-epoch teacher: --methods ... sdae-per-epoch), take the random-init control
(the student every run starts from), run the real preset
(fine-tune, linear probe, ADE20K-layout segmentation, COCO-layout detection and
instance segmentation) on each, and write mean ± std per task and metric with the
gap to the control (studies/discrimination.py).

    python tools/benchmark_discrimination.py [--seeds 0 1 2] [--methods random-init mae sdae] [--jobs 2]
                                             [--out runs/discrimination] [--tasks finetune,linprobe,ade20k,coco]
                                             [--pretrain-epochs N]

Outputs: OUT/{results.json,table.md,table.csv,plot.png}; the suite's records under
OUT/suite/results/ (reused on rerun), pretraining records under OUT/pretrain_records/.
"""

import argparse
import sys
from pathlib import Path

from studies.discrimination import DEFAULT_METHODS, METHODS, default_amp, markdown_table, run, write_outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(METHODS))
    parser.add_argument("--tasks", default="finetune,linprobe,ade20k,coco")
    parser.add_argument("--out", default="runs/discrimination")
    parser.add_argument("--data", help="real-suite data folder (default: OUT/data; built if absent)")
    parser.add_argument(
        "--pretrain-epochs", type=int, help="stretch the pretraining schedule (default: the configs' 30 epochs)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="training processes at once (each gets CPUs / jobs threads)"
    )
    parser.add_argument(
        "--amp", choices=["bf16", "fp16", "none"], help="default: none on a CPU, the configs' bf16 on a GPU"
    )
    args = parser.parse_args()
    out = Path(args.out).resolve()
    try:
        result = run(
            out,
            args.seeds,
            tuple(args.methods),
            tuple(args.tasks.split(",")),
            Path(args.data).resolve() if args.data else None,
            args.amp or default_amp(),
            args.jobs,
            say=lambda message: print(f"[discrimination] {message}", flush=True),
            pretrain_epochs=args.pretrain_epochs,
        )
    except (FileExistsError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = write_outputs(result, out)
    print(markdown_table(result))
    runs = len(result["records"])
    print(f"[discrimination] {runs} runs in {result['wall_time_s']:.0f}s; table {paths['table']}, plot {paths['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
