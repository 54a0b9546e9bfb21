"""Throughput of the pretraining data path: JPEG decoding on the CPU vs on the device.

Each mode reads the same JPEG folder through ``PretrainImageDataset`` and a
DataLoader (crop 224, flip, batch of 96 by default) and ends with the batch
normalised on the device by the model's data preprocessor, as in training:

* ``cpu``: the workers decode with PIL and crop (the default path);
* ``device``: the workers read the bytes and draw the crops; the batch is
  decoded with nvJPEG (``torchvision.io.decode_jpeg``) and cropped on the device.

    python tools/benchmark_data.py --generate 2000 --device cuda --workers 16   # ImageNet-sized JPEGs
    python tools/benchmark_data.py --data /data/imagenet/train --device cuda --workers 16

Prints images per second per mode (after warm-up batches, the device
synchronised at the end); ``--json`` prints them as JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

from pretrain.data import PretrainImageDataset
from pretrain.data.real import write_photo_jpegs
from pretrain.engine.model import IMAGENET_MEAN, IMAGENET_STD, PretrainDataPreprocessor


def measure(args: argparse.Namespace, root: Path, decode: str) -> dict:
    device = torch.device(args.device)
    dataset = PretrainImageDataset(str(root), subdir="", img_size=args.img_size, decode=decode)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        collate_fn=default_collate,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    if len(loader) < args.warmup + args.batches:
        raise SystemExit(
            f"{len(dataset)} images give {len(loader)} batches of {args.batch_size}; "
            f"need {args.warmup + args.batches} (--warmup + --batches)"
        )
    preprocess = PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD, non_blocking=True).to(device)
    batches = iter(loader)
    for _ in range(args.warmup):  # worker start-up, nvJPEG and allocator initialisation
        preprocess(next(batches), True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.batches):
        out = preprocess(next(batches), True)["inputs"]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if out.shape != (args.batch_size, 3, args.img_size, args.img_size):
        raise RuntimeError(f"the {decode} path produced a batch of shape {tuple(out.shape)}")
    images = args.batches * args.batch_size
    return dict(decode=decode, img_s=images / seconds, img_s_per_worker=images / seconds / max(args.workers, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a folder of JPEGs (searched recursively)")
    source.add_argument("--generate", type=int, metavar="N", help="write N ImageNet-sized JPEGs to a temporary folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=["cpu", "device"], default=["cpu", "device"])
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches")
    parser.add_argument("--batches", type=int, default=10, help="timed batches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch sees no GPU")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        if args.generate:
            print(f"writing {args.generate} JPEGs ...", file=sys.stderr, flush=True)
            write_photo_jpegs(root, args.generate, workers=max(args.workers, 1))
        files = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
        rows = [measure(args, root, mode) for mode in args.modes]
        meta = dict(
            device=args.device.split(":")[0],
            device_name=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            workers=args.workers,
            cpu_count=os.cpu_count(),
            batch_size=args.batch_size,
            img_size=args.img_size,
            batches=args.batches,
            images=len(files),
            mean_file_kib=sum(p.stat().st_size for p in files) / max(len(files), 1) / 1024,
            torch=torch.__version__,
        )
    if args.json:
        print(json.dumps(dict(meta=meta, results=rows), indent=2))
        return
    print(
        f"{meta['images']} JPEGs (mean {meta['mean_file_kib']:.0f} KiB), crop {args.img_size}, "
        f"batch {args.batch_size}, {args.workers} workers, {meta['device_name']}"
    )
    for row in rows:
        print(f"decode on {row['decode']:6s}: {row['img_s']:8.1f} img/s ({row['img_s_per_worker']:.1f} per worker)")


if __name__ == "__main__":
    main()
