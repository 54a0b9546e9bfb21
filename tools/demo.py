"""The embedded default, end to end on CPU: generate small ImageNet-, ADE20K- and
COCO-layout datasets, pretrain a ViT-tiny SdAE and a ViT-tiny MAE baseline with
the same budget, run the mini suite (fine-tune, linear probe, ADE20K, COCO) on
both and on a random-init control, and write the report.

    python tools/demo.py [--out runs/demo] [--epochs 10] [--tasks finetune,linprobe,ade20k,coco]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pretrain.data.synthetic import write_ade20k_like, write_coco_like, write_imagenet_like
from pretrain.report import write_report
from pretrain.suite import TASKS, run_suite

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = {
    "SdAE": REPO / "pretrain/configs/sdae_vit-tiny-p16_1xb32-10e_synthetic.py",
    "MAE": REPO / "pretrain/configs/mae_vit-tiny-p16_1xb32-10e_synthetic.py",
}


def generate(data: Path) -> dict[str, Path]:
    roots = {"imagenet": data / "synthetic_imagenet", "ade20k": data / "synthetic_ade", "coco": data / "synthetic_coco"}
    writers = {
        "imagenet": lambda p: write_imagenet_like(p, seed=0),
        "ade20k": lambda p: write_ade20k_like(p, seed=0),
        "coco": lambda p: write_coco_like(p, seed=0),
    }
    for name, root in roots.items():
        if root.is_dir():
            print(f"[demo] reusing {name} data in {root}")
        else:
            print(f"[demo] generated {writers[name](root)} images in {root}")
    return roots


def pretrain(method: str, data: Path, work_dir: Path, epochs: int) -> Path:
    print(f"[demo] pretraining ViT-tiny {method} for {epochs} epochs (log: {work_dir})", flush=True)
    cmd = [
        sys.executable,
        str(REPO / "tools/train.py"),
        str(PRETRAIN[method]),
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data}",
        f"train_cfg.max_epochs={epochs}",
    ]
    log = work_dir / "demo.log"
    work_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        if subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"[demo] {method} pretraining failed; see {log}")
    return Path((work_dir / "last_checkpoint").read_text().strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="run directory (data, checkpoints, results, report)")
    parser.add_argument("--epochs", type=int, default=10, help="pretraining epochs for SdAE and MAE alike")
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    start = time.time()
    data = generate(out / "data")
    checkpoints = {m: pretrain(m, data["imagenet"], out / f"{m.lower()}_vit-tiny", args.epochs) for m in PRETRAIN}
    checkpoints["Random init"] = "random:tiny"
    for label, checkpoint in checkpoints.items():
        run_suite(str(checkpoint), out / "suite", "mini", tuple(args.tasks.split(",")), data, label=label)
    report = write_report(out / "suite/results", out / "report")
    print(report.read_text())
    print(f"[demo] done in {time.time() - start:.0f}s")
    print(f"[demo] SdAE checkpoint (student, teacher, decoder, optimizer): {checkpoints['SdAE']}")
    print(f"[demo] TensorBoard: tensorboard --logdir {out}")
    print(f"[demo] report: {report}")
    print(f"[demo] run directory: {out}")


if __name__ == "__main__":
    main()
