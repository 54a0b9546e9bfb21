"""Check webdataset shards against their manifest (tools/pack_shards.py) before training.

    python tools/check_shards.py /data/imagenet-shards/train-manifest.json [--workers 8]

Reads every shard once: its sha256 against the manifest's, then its members
(one <key>.cls and one image per sample, keys in order, class indices in
range, the manifest's number of samples). Lists every bad shard; exit status 0
when all are intact, 1 otherwise. The training reads shards without hashing
them (ShardedDataset(verify=True) hashes each before reading it).
"""

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from pretrain.data.shards import ShardError, read_manifest, shard_problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="OUT/<split>-manifest.json written by tools/pack_shards.py")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="shards read at once")
    args = parser.parse_args()
    try:
        manifest = read_manifest(args.manifest)
    except ShardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = []
    if not manifest.complete:
        problems.append(f"{manifest.path}: the packing did not finish; rerun the tools/pack_shards.py command")
    shards = [shard for shard in manifest.shards if shard.sha256 is not None]
    with ProcessPoolExecutor(max(args.workers, 1)) as pool:
        for done, found in enumerate(pool.map(shard_problems, [manifest] * len(shards), shards), start=1):
            problems += found
            if done == len(shards) or done % 100 == 0:
                end = "\n" if done == len(shards) else ""
                print(f"\rchecked {done}/{len(shards)} shards", end=end, file=sys.stderr)
    for problem in problems:
        print(f"BAD  {problem}")
    status = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"{manifest.path}: {len(shards)} shards, {manifest.total} samples checked: {status}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
