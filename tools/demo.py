"""The embedded default: generate a small ImageNet-layout dataset and pretrain a
ViT-tiny SdAE on it (CPU is enough), leaving a checkpoint and TensorBoard logs.

    python tools/demo.py [--out runs/demo] [--epochs 10]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pretrain.data.synthetic import write_imagenet_like

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "pretrain/configs/sdae_vit-tiny-p16_1xb32-10e_synthetic.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="run directory (data, logs, checkpoints)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    data = out / "data/synthetic_imagenet"
    work_dir = out / "sdae_vit-tiny"
    start = time.time()

    if (data / "train").is_dir():
        print(f"[demo] reusing generated data in {data}")
    else:
        counts = write_imagenet_like(data, seed=0)
        print(f"[demo] generated {counts} images in {data}")
    print(f"[demo] pretraining ViT-tiny SdAE for {args.epochs} epochs (log: {work_dir})", flush=True)
    cmd = [
        sys.executable,
        str(REPO / "tools/train.py"),
        str(CONFIG),
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data}",
        f"train_cfg.max_epochs={args.epochs}",
    ]
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode:
        raise SystemExit(f"[demo] training failed (exit {result.returncode}); see the log above")

    checkpoint = (work_dir / "last_checkpoint").read_text().strip()
    print(f"[demo] done in {time.time() - start:.0f}s")
    print(f"[demo] checkpoint (student, teacher, decoder, optimizer): {checkpoint}")
    print(f"[demo] TensorBoard: tensorboard --logdir {work_dir}")
    print(f"[demo] run directory: {out}")


if __name__ == "__main__":
    main()
