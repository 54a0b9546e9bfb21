"""List every unreadable or misplaced file of an image dataset before training.

    python tools/check_dataset.py imagenet /data/imagenet [--splits train val] [--workers 8]
    python tools/check_dataset.py ade20k /data/ade   (the folder holding ADEChallengeData2016)
    python tools/check_dataset.py coco /data/coco    (annotations/instances_*2017.json, train2017/, val2017/)
    python tools/check_dataset.py folder /data/unlabeled_images

Exit status 0 when the dataset is clean, 1 when problems were found.
"""

import argparse
import os
import sys

from pretrain.data.checks import check_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layout", choices=["imagenet", "ade20k", "coco", "folder"])
    parser.add_argument("root")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="imagenet layout: splits to check")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    args = parser.parse_args()

    def progress(done: int, total: int) -> None:
        if done == total or done % 5000 == 0:
            print(f"\rdecoded {done}/{total} images", end="\n" if done == total else "", file=sys.stderr)

    report = check_dataset(args.root, args.layout, args.splits, args.workers, progress)
    for problem in report.layout:
        print(f"LAYOUT      {problem}")
    for path, reason in report.unreadable:
        print(f"UNREADABLE  {path}: {reason}")
    status = "OK" if report.ok else f"{len(report.layout)} layout problem(s), {len(report.unreadable)} unreadable"
    print(f"{args.root}: {report.images} images checked: {status}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
