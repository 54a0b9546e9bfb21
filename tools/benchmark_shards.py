"""Read throughput of the pretraining data: the image folder vs webdataset shards
of the same images, in one run.

Each path runs whole epochs through a DataLoader with --workers processes and
batches of --batch-size, the same two ways:

* ``decoded``: as pretraining reads (PretrainImageDataset / ShardedPretrainDataset:
  decode, RandomResizedCrop --img-size, flip; uint8 batches);
* ``bytes``: the files' bytes only (no decoding, shuffle buffer or augmentation
  seeds): storage and container parsing alone.

    python tools/benchmark_shards.py --generate 1000 --workers 2           # ImageNet-sized JPEGs
    python tools/benchmark_shards.py --data /data/imagenet --shards /data/imagenet-shards/train-manifest.json

Prints img/s per path and the shards / folder ratio; with --out, writes
results.json and results.md there. One untimed epoch per row first (worker
start-up, the page cache); the median of --epochs timed epochs is reported.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from pretrain.data import PretrainImageDataset, ShardedDataset, ShardedPretrainDataset, list_images
from pretrain.data.real import write_photo_jpegs
from pretrain.data.sampler import ResumableSampler
from pretrain.data.shard_pack import pack
from pretrain.data.shards import load_manifest


class FileBytes(Dataset):
    """The folder path without decoding: each file's byte count after reading it."""

    def __init__(self, folder: Path) -> None:
        self.files = list_images(folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> int:
        return len(self.files[index].read_bytes())


class ShardBytes(ShardedDataset):
    """The shard path without decoding, shuffle buffer or augmentation seeds: each
    sample's byte count, in the order the worker reads them."""

    def __iter__(self) -> Iterator[int]:
        return (len(sample.data) for _, sample in self.read(self.positions(), self.epoch))


def write_imagenet_photos(root: Path, count: int, classes: int, workers: int) -> None:
    """``count`` ImageNet-sized JPEGs in ``root/train/<class>/`` (``classes`` folders)."""
    for c in range(classes):
        share = count // classes + (c < count % classes)
        write_photo_jpegs(root / "train" / f"c{c:03d}", share, seed=c, workers=workers)


def loaders(args: argparse.Namespace, root: Path, manifest: Path, decoded: bool) -> dict[str, DataLoader]:
    """Both paths' loaders: ``decoded`` as the pretraining configs read (the folder
    through ResumableSampler, which seeds each sample's crop as the shards do)."""
    common = dict(batch_size=args.batch_size, num_workers=args.workers, drop_last=True)
    if decoded:
        folder = PretrainImageDataset(str(root), "train", img_size=args.img_size)
        shards = ShardedPretrainDataset(str(manifest), img_size=args.img_size, seed=0, batch_size=args.batch_size)
        order, collate = dict(sampler=ResumableSampler(folder, shuffle=True, seed=0)), default_collate
    else:
        folder, collate = FileBytes(root / "train"), list
        shards = ShardBytes(str(manifest), seed=0, batch_size=args.batch_size)
        order = dict(shuffle=True, generator=torch.Generator().manual_seed(0))
    return {
        "folder": DataLoader(folder, collate_fn=collate, **order, **common),
        "shards": DataLoader(shards, collate_fn=collate, **common),
    }


def epoch_img_s(loader: DataLoader, epoch: int) -> float:
    for order in (loader.sampler, loader.dataset):
        if hasattr(order, "set_epoch"):
            order.set_epoch(epoch)
    start = time.perf_counter()
    images = sum(len(batch) if isinstance(batch, list) else batch["inputs"].shape[0] for batch in loader)
    return images / (time.perf_counter() - start)


def measure(args: argparse.Namespace, root: Path, manifest: Path) -> list[dict]:
    """The median img/s of each path; their epochs alternate, so that a change of the
    machine's load during the run weighs on both alike."""
    rows = []
    for decoded in (True, False):
        paths = loaders(args, root, manifest, decoded)
        for loader in paths.values():
            epoch_img_s(loader, 0)  # untimed
        timed = {path: [] for path in paths}
        for epoch in range(1, args.epochs + 1):
            for path, loader in paths.items():
                timed[path].append(epoch_img_s(loader, epoch))
        for path, values in timed.items():
            read = "decoded" if decoded else "bytes"
            rows.append(dict(path=path, read=read, img_s=statistics.median(values), epochs_img_s=values))
            print(f"{path:7s} {rows[-1]['read']:8s} {rows[-1]['img_s']:9.1f} img/s", file=sys.stderr, flush=True)
    return rows


def report(meta: dict, rows: list[dict]) -> str:
    by = {(r["path"], r["read"]): r["img_s"] for r in rows}
    lines = [
        f"{meta['images']} JPEGs (mean {meta['mean_file_kib']:.0f} KiB) in {meta['num_shards']} shards, "
        f"crop {meta['img_size']}, batch {meta['batch_size']}, {meta['workers']} workers, "
        f"{meta['cpu_count']} CPUs, {meta['epochs']} timed epoch(s) each (median)",
        "",
        "| read | folder img/s | shards img/s | shards / folder |",
        "|---|---|---|---|",
    ]
    for read in ("decoded", "bytes"):
        folder, shards = by[("folder", read)], by[("shards", read)]
        lines.append(f"| {read} | {folder:.1f} | {shards:.1f} | {shards / folder:.2f} |")
    lines += [
        "",
        f"Both paths read {meta['storage']} through the page cache (the files were just written, or",
        "read by the untimed epoch): on a local disk, opening one file per image costs little, and",
        "decoding dominates. The shards' advantage, a few large sequential reads instead of one open",
        "and read per image, shows on network filesystems, which this run does not measure.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="an ImageNet layout; its train split is read")
    source.add_argument("--generate", type=int, metavar="N", help="write N ImageNet-sized JPEGs to a temporary folder")
    parser.add_argument("--shards", help="with --data: its packed manifest (default: pack into a temporary folder)")
    parser.add_argument("--classes", type=int, default=4, help="with --generate: class folders")
    parser.add_argument("--shard-size", type=int, default=1000, help="when packing here")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per row")
    parser.add_argument("--out", help="write results.json and results.md to this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "imagenet"
        if args.generate:
            print(f"writing {args.generate} JPEGs ...", file=sys.stderr, flush=True)
            write_imagenet_photos(root, args.generate, args.classes, max(args.workers, 1))
        if args.shards:
            manifest = Path(args.shards)
        else:
            print("packing them into shards ...", file=sys.stderr, flush=True)
            manifest = pack(root, Path(tmp) / "shards", "train", shard_size=args.shard_size).path
        files = list_images(root / "train")
        meta = dict(
            command=" ".join(["python", "tools/benchmark_shards.py", *sys.argv[1:]]),
            images=len(files),
            mean_file_kib=sum(p.stat().st_size for p in files) / len(files) / 1024,
            num_shards=len(load_manifest(manifest).shards),
            shard_size=args.shard_size,
            generated=bool(args.generate),
            workers=args.workers,
            cpu_count=os.cpu_count(),
            batch_size=args.batch_size,
            img_size=args.img_size,
            epochs=args.epochs,
            storage="a temporary folder" if args.generate else str(root),
            torch=torch.__version__,
        )
        rows = measure(args, root, manifest)
    text = report(meta, rows)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(dict(meta=meta, results=rows), indent=2) + "\n")
        (out / "results.md").write_text(text)


if __name__ == "__main__":
    main()
