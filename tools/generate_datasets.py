"""Write small datasets in the official layouts (deterministic from --seed).

python tools/generate_datasets.py imagenet data/synthetic_imagenet [--classes 8] ...
python tools/generate_datasets.py ade20k data/synthetic_ade [--train 40] ...
python tools/generate_datasets.py real data/real32     # real images bundled in scikit-learn / scikit-image
python tools/generate_datasets.py realsuite data/realsuite  # the real-image mini suite (ImageNet/ADE20K/COCO layouts)
python tools/generate_datasets.py robustness data/robustness --imagenet data/realsuite/imagenet  # IN-A/R/Sketch/V2/C
"""

import argparse
import time

from classification.robustness import EXTRA_CORRUPTIONS, MCE_CORRUPTIONS, SETS, imagenet_wnids
from pretrain.data.real import write_real_datasets
from pretrain.data.real_suite import write_real_suite
from pretrain.data.robustness_sets import write_robustness_sets
from pretrain.data.synthetic import PATTERNS, write_ade20k_like, write_coco_like, write_imagenet_like


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
    ade = sub.add_parser("ade20k", help="ADE20K layout: OUT/ADEChallengeData2016/{images,annotations}/...")
    ade.add_argument("out")
    ade.add_argument("--train", type=int, default=40)
    ade.add_argument("--val", type=int, default=10)
    ade.add_argument("--image-size", type=int, default=128)
    ade.add_argument("--classes", type=int, default=8, help="ADE labels 1..N are used (of 150)")
    ade.add_argument("--seed", type=int, default=0)
    coco = sub.add_parser("coco", help="COCO 2017 layout: OUT/annotations/instances_*2017.json, OUT/{train,val}2017/")
    coco.add_argument("out")
    coco.add_argument("--train", type=int, default=24)
    coco.add_argument("--val", type=int, default=8)
    coco.add_argument("--width", type=int, default=160)
    coco.add_argument("--height", type=int, default=128)
    coco.add_argument("--seed", type=int, default=0)
    real = sub.add_parser(
        "real",
        help="real 32 px images from scikit-learn / scikit-image: OUT/{digits,textures,faces}/{train,val}/<class>/ "
        "and OUT/pretrain/train/ (recipe: pretrain/data/real.py)",
    )
    real.add_argument("out")
    real.add_argument("--photo-crops", type=int, default=2000, help="unlabeled photograph crops for pretraining")
    real.add_argument("--seed", type=int, default=0)
    suite = sub.add_parser(
        "realsuite",
        help="the real-image mini suite: OUT/imagenet (materials), OUT/ade (ADEChallengeData2016: material mosaics), "
        "OUT/coco (digits, faces, coins on materials), OUT/pretrain (the train splits, unlabelled); "
        "recipe: pretrain/data/real_suite.py",
    )
    suite.add_argument("out")
    suite.add_argument("--seed", type=int, default=0)
    robust = sub.add_parser(
        "robustness",
        help="ImageNet-A/-R/-Sketch/-V2/-C in their release layouts from the val split of --imagenet, plus "
        "OUT/class_map.json for tools/eval_robustness.py --class-map (recipe: pretrain/data/robustness_sets.py)",
    )
    robust.add_argument("out")
    robust.add_argument("--imagenet", required=True, help="ImageNet-layout folder whose val/<class>/ is used")
    robust.add_argument("--per-class", type=int, default=5, help="images per class in IN-A/-R/-Sketch/-V2")
    robust.add_argument("--c-per-class", type=int, default=2, help="images per class, corruption and severity")
    robust.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.time()
    if args.kind == "imagenet":
        counts = write_imagenet_like(
            args.out, args.classes, args.train_per_class, args.val_per_class, args.image_size, args.seed
        )
    elif args.kind == "ade20k":
        counts = write_ade20k_like(args.out, args.train, args.val, args.image_size, args.classes, args.seed)
    elif args.kind == "coco":
        counts = write_coco_like(args.out, args.train, args.val, (args.width, args.height), args.seed)
    else:
        try:
            if args.kind == "real":
                recipe = write_real_datasets(args.out, args.seed, photo_crops_count=args.photo_crops, progress=print)
            elif args.kind == "robustness":
                subsets = {name: set(SETS[name].classes()) for name in ("imagenet_a", "imagenet_r")}
                recipe = write_robustness_sets(
                    args.out,
                    args.imagenet,
                    imagenet_wnids(),
                    subsets,
                    (*MCE_CORRUPTIONS, *EXTRA_CORRUPTIONS),
                    args.seed,
                    args.per_class,
                    args.c_per_class,
                    progress=print,
                )
            else:
                recipe = write_real_suite(args.out, args.seed, progress=print)
        except (FileExistsError, FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        counts = recipe["counts"]
    print(f"wrote {counts} images to {args.out} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
