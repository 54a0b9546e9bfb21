"""Pack an ImageNet-layout split into webdataset tar shards plus a manifest.

    python tools/pack_shards.py /data/imagenet /data/imagenet-shards --split train [--shard-size 1000]
    python tools/pack_shards.py /data/imagenet /data/imagenet-shards --split train --max-shard-bytes 500000000

Writes OUT/<split>-000000.tar ... (per sample <key>.cls and <key>.jpg/.png, the
image's original bytes) and OUT/<split>-manifest.json (classes, samples and
sha256 per shard). The samples are shuffled once with --seed before they are
cut into shards. Interrupted? Rerun the same command: finished shards whose
hash matches are kept, the rest are written. Check a copy of the shards with
tools/check_shards.py.
"""

import argparse
import os
import sys
from pathlib import Path

from pretrain.data.folders import ImageFolderError
from pretrain.data.shard_pack import ProgressLine, pack
from pretrain.data.shards import ShardError
from pretrain.engine.lock import WorkDirBusyError, hold_lock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the ImageNet layout: ROOT/<split>/<class>/<image>")
    parser.add_argument("out", help="folder for the shards and the manifest")
    parser.add_argument("--split", default="train")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=int, help="images per shard (default 1000)")
    size.add_argument("--max-shard-bytes", type=int, help="bytes per shard at most, tar headers included")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle before cutting into shards")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="shards written at once")
    args = parser.parse_args()
    if args.shard_size is None and args.max_shard_bytes is None:
        args.shard_size = 1000
    out = Path(args.out)
    try:
        with hold_lock(out / f".{args.split}-pack.lock", f"tools/pack_shards.py {args.root}"):
            manifest = pack(
                args.root,
                out,
                args.split,
                shard_size=args.shard_size,
                max_shard_bytes=args.max_shard_bytes,
                seed=args.seed,
                workers=args.workers,
                progress=ProgressLine(sys.stderr),
            )
    except (ImageFolderError, ShardError, WorkDirBusyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{manifest.path}: {manifest.total} images in {len(manifest.shards)} shards, {len(manifest.classes)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
