"""Write small synthetic datasets in the official layouts (deterministic from --seed).

python tools/generate_datasets.py imagenet data/synthetic_imagenet [--classes 8] ...
"""

import argparse
import time

from pretrain.data.synthetic import PATTERNS, write_imagenet_like


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    imnet = sub.add_parser("imagenet", help="ImageNet folder layout: OUT/{train,val}/<class>/<image>.JPEG")
    imnet.add_argument("out")
    imnet.add_argument("--classes", type=int, default=8, help=f"1..{len(PATTERNS)} texture classes")
    imnet.add_argument("--train-per-class", type=int, default=40)
    imnet.add_argument("--val-per-class", type=int, default=10)
    imnet.add_argument("--image-size", type=int, default=112)
    imnet.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.time()
    counts = write_imagenet_like(
        args.out, args.classes, args.train_per_class, args.val_per_class, args.image_size, args.seed
    )
    print(f"wrote {counts} images to {args.out} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
