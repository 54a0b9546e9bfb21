"""Convert a checkpoint to the suite's canonical backbone file (safetensors + JSON metadata).

    python tools/convert_checkpoint.py SRC OUT.safetensors [--select student|teacher]
                                       [--trust-pickle] [--img-size N] [--num-heads N]
    python tools/convert_checkpoint.py --info FILE.safetensors

SRC may be this project's training checkpoint, an official MAE, SdAE, BEiT or
CAE release, or a timm ViT state dict; the layout is recognised from the keys.
"""

import argparse
import json
import sys
from pathlib import Path

from pretrain.checkpoints import (
    UnknownCheckpointError,
    UntrustedPickleError,
    convert,
    load_checkpoint_file,
    read_backbone,
    save_backbone,
)
from pretrain.checkpoints.canonical import sha256_file
from pretrain.models.pos_embed import resize_pos_embed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint to convert (or, with --info, a canonical file)")
    parser.add_argument("out", nargs="?", help="canonical file to write (.safetensors)")
    parser.add_argument(
        "--select",
        choices=["student", "teacher"],
        default="student",
        help="SdAE checkpoints: the student encoder (default, as the paper) or the EMA teacher",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling non-tensor objects (official releases store an argparse Namespace)",
    )
    parser.add_argument("--img-size", type=int, help="resize the absolute position embedding to this input size")
    parser.add_argument("--num-heads", type=int, help="attention heads, for non-standard ViT widths")
    parser.add_argument("--info", action="store_true", help="print the metadata of a canonical file")
    args = parser.parse_args()

    if args.info:
        print(json.dumps(read_backbone(args.src).metadata, indent=2, sort_keys=True))
        return 0
    if not args.out or not args.out.endswith(".safetensors"):
        parser.error("OUT must be given and end in .safetensors")
    src = Path(args.src)
    try:
        conversion = convert(load_checkpoint_file(src, args.trust_pickle), args.select, args.num_heads)
    except (UntrustedPickleError, UnknownCheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    backbone = conversion.backbone
    if args.img_size:
        arch = backbone.arch
        if args.img_size % arch.patch_size:
            parser.error(f"--img-size {args.img_size} is not a multiple of the patch size {arch.patch_size}")
        if arch.rel_pos_bias != "none":
            parser.error("--img-size: resizing relative position bias tables is not supported")
        side = args.img_size // arch.patch_size
        backbone.state_dict["pos_embed"] = resize_pos_embed(backbone.state_dict["pos_embed"], (side, side))
        backbone.arch = type(arch)(**{**arch.__dict__, "grid": (side, side)})
    backbone.metadata["source"] = {"file": src.name, "sha256": sha256_file(src)}
    metadata = save_backbone(args.out, backbone)
    print(conversion.report())
    print(f"wrote {args.out} (weights sha256 {metadata['weights_sha256'][:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
