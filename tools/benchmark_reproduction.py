"""Small-scale reproduction on real images: does SdAE learn, and do its teacher
feedings order as in the paper (Table 5, Fig. 4b)?

    python tools/benchmark_reproduction.py                       # 26 min on 2 CPU cores
    python tools/benchmark_reproduction.py --seeds 0 --variants random-init mae multi-fold-3
    python tools/benchmark_reproduction.py --out runs/reproduction-30e --pretrain-epochs 30 \
        --variants random-init mae multi-fold-3                  # a 5x longer schedule

Builds the real-image datasets (scikit-learn digits, scikit-image photographs,
textures and LFW subset; ``pretrain/data/real.py``) unless present, then for
every seed and variant pretrains a ViT-micro on 32 px images with the same
budget (``pretrain/configs/reproduction/``: 6 epochs of 4,478 images at batch
128, 204 steps), probes it linearly on digits, textures and faces, fine-tunes
it briefly on digits, and writes

    OUT/records/<variant>_seed<k>.json   one record per run (reused when rerun)
    OUT/results.json, OUT/table.md, OUT/table.csv, OUT/plot.png

Default variants: random-init (the encoder every run starts from), mae,
full-image, only-masked, multi-fold-{2,3,4}, multi-fold-3-no-norm. SdAE runs
use the published teacher (random init, EMA once per epoch, 0.96 -> 0.99) and
the token-axis loss. Investigation variants, one change each to multi-fold-3:
multi-fold-3-ema-iter (EMA after every step), multi-fold-3-feature-axis
(cosine along features), multi-fold-3-teacher-copy (teacher starts as a copy of
the student). Records are keyed by everything that decides their numbers, so
runs of one variant are shared between invocations writing to the same OUT.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from mmengine.config import DictAction

from pretrain.data.real import write_real_datasets
from studies.reproduction import DEFAULT_VARIANTS, VARIANTS, csv_table, markdown_table, plot, run_one, summarise


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/reproduction", help="records, table and plot")
    parser.add_argument("--data", default="data/real32", help="the real-image datasets (built here if absent)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the dataset recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS), metavar="VARIANT"
    )
    parser.add_argument("--photo-crops", type=int, default=2000, help="unlabeled photograph crops for pretraining")
    parser.add_argument(
        "--pretrain-epochs", type=int, help="stretch the pretraining schedule (default: the configs' 6 epochs)"
    )
    parser.add_argument(
        "--pretrain-options",
        nargs="+",
        action=DictAction,
        default={},
        help="config overrides for every pretraining run, e.g. train_cfg.max_epochs=12",
    )
    parser.add_argument(
        "--finetune-options",
        nargs="+",
        action=DictAction,
        default={},
        help="config overrides for every fine-tuning run",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out, data = Path(args.out), Path(args.data)
    start = time.time()

    def say(message: str) -> None:
        print(f"[reproduction {time.time() - start:6.0f}s] {message}", flush=True)

    try:
        recipe = write_real_datasets(data, seed=args.data_seed, photo_crops_count=args.photo_crops, progress=say)
    except FileExistsError as err:
        raise SystemExit(f"error: {err}") from None
    say(f"datasets in {data}: {json.dumps(recipe['counts'])}")
    runs = [(seed, name) for seed in args.seeds for name in args.variants]
    records = []
    for i, (seed, name) in enumerate(runs, 1):
        say(f"[{i}/{len(runs)}] {name}, seed {seed}")
        record = run_one(
            VARIANTS[name],
            seed,
            data,
            out,
            recipe,
            args.pretrain_options,
            args.finetune_options,
            args.pretrain_epochs,
            say,
        )
        records.append(record)
        say(
            f"[{i}/{len(runs)}] {name}, seed {seed}: linear digits {record['linear_digits']:.1f}, "
            f"textures {record['linear_textures']:.1f}, faces {record['linear_faces']:.1f}; "
            f"fine-tune digits {record['finetune_digits']:.1f} ({record['total_s']:.0f}s)"
        )
    rows = summarise(records, args.variants)
    table = markdown_table(rows)
    results = dict(
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        data=recipe,
        seeds=args.seeds,
        rows=rows,
        records=records,
        wall_time_s=round(time.time() - start, 1),  # this invocation (recorded runs are reused)
        runs_time_s=round(sum(r["total_s"] for r in records), 1),  # the runs themselves, when they ran
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    (out / "table.md").write_text(table + "\n")
    (out / "table.csv").write_text(csv_table(rows))
    plot(rows, out / "plot.png")
    print(table)
    say(f"wrote {out}/results.json, table.md, table.csv, plot.png")


if __name__ == "__main__":
    main()
