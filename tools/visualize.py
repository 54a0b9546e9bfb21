"""PNGs of what an SdAE pretraining checkpoint does on one image: the random mask,
the teacher-student cosine similarity per masked patch, and the last-layer
class-token attention.

    python tools/visualize.py CHECKPOINT IMAGE [--out DIR] [--seed N]
"""

import argparse

from pretrain.visualize import visualise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint of this project (epoch_N.pth)")
    parser.add_argument("image")
    parser.add_argument("--out", default="runs/visualize")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    args = parser.parse_args()
    for path in visualise(args.checkpoint, args.image, args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
