"""Convert a checkpoint to the suite's canonical backbone file (safetensors + JSON metadata).

    python tools/convert_checkpoint.py SRC OUT.safetensors [--select student|teacher]
                                       [--trust-pickle] [--img-size N] [--num-heads N]
    python tools/convert_checkpoint.py --info FILE.safetensors

SRC may be this project's training checkpoint, an official MAE, SdAE, BEiT, CAE,
MoCo v3, DINO, iBOT or DINOv2 file, an mmpretrain / mmselfsup checkpoint, or a
timm ViT state dict; the layout is recognised from the keys. Nothing is written
unless the encoder is complete and every tensor has the shape its architecture
gives it. Refusals are one line on stderr and exit status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from pretrain.checkpoints import (
    BackboneKeyError,
    NotCanonicalError,
    UnknownCheckpointError,
    UnreadableCheckpointError,
    UntrustedPickleError,
    check_complete_encoder,
    convert,
    load_checkpoint_file,
    read_backbone,
    save_backbone,
)
from pretrain.checkpoints.canonical import sha256_file
from pretrain.models.pos_embed import resize_pos_embed

REFUSALS = (
    UntrustedPickleError,
    UnknownCheckpointError,
    UnreadableCheckpointError,
    NotCanonicalError,
    BackboneKeyError,
    ValueError,
    FileNotFoundError,
)


class Refused(Exception):
    """A refusal of this tool's own (bad options for this checkpoint)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint to convert (or, with --info, a canonical file)")
    parser.add_argument("out", nargs="?", help="canonical file to write (.safetensors)")
    parser.add_argument(
        "--select",
        choices=["student", "teacher"],
        help="two-encoder checkpoints: the student or the teacher (EMA / momentum encoder); default: the "
        "one the method's own evaluation uses (SdAE, MoCo v3: student; DINO, iBOT, DINOv2: teacher)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling non-tensor objects (official releases store an argparse Namespace)",
    )
    parser.add_argument("--img-size", type=int, help="resize the absolute position embedding to this input size")
    parser.add_argument(
        "--num-heads",
        type=int,
        help="attention heads, where neither the file nor its layout's known sizes determine them",
    )
    parser.add_argument("--info", action="store_true", help="print the metadata of a canonical file")
    args = parser.parse_args()

    try:
        if args.info:
            print(json.dumps(read_backbone(args.src).metadata, indent=2, sort_keys=True))
            return 0
        if not args.out or not args.out.endswith(".safetensors"):
            parser.error("OUT must be given and end in .safetensors")
        conversion = convert(load_checkpoint_file(args.src, args.trust_pickle), args.select, args.num_heads)
        backbone = conversion.backbone
        if args.img_size:
            resize(backbone, args.img_size)
            check_complete_encoder(backbone.state_dict, backbone.arch, "the resized encoder")
    except (*REFUSALS, Refused) as err:
        message = " ".join(str(err).split())  # one line, whatever the exception text holds
        print(f"error: {message}", file=sys.stderr)
        return 2
    src = Path(args.src)
    backbone.metadata["source"] = {"file": src.name, "sha256": sha256_file(src)}
    metadata = save_backbone(args.out, backbone)
    print(conversion.report())
    print(f"wrote {args.out} (weights sha256 {metadata['weights_sha256'][:16]}...)")
    return 0


def resize(backbone, img_size: int) -> None:
    """Resize the absolute position embedding (bicubic, as MAE) to ``img_size``."""
    arch = backbone.arch
    if img_size % arch.patch_size:
        raise Refused(f"--img-size {img_size} is not a multiple of the patch size {arch.patch_size}")
    if arch.rel_pos_bias != "none":
        raise Refused(
            "--img-size: this encoder has relative position bias tables, which the converter does not resize; "
            "the dense backbone resizes them when it loads the file"
        )
    side = img_size // arch.patch_size
    backbone.state_dict["pos_embed"] = resize_pos_embed(backbone.state_dict["pos_embed"], (side, side))
    backbone.arch = type(arch)(**{**arch.__dict__, "grid": (side, side)})


if __name__ == "__main__":
    sys.exit(main())
