"""JPEG decoding and the pretraining crop on the training device.

At thousands of images per second a node's CPUs cannot decode ImageNet JPEGs
fast enough, so the pretraining dataset can hand over the encoded file and the
crop it drew instead of pixels (``PretrainImageDataset(decode="device")``):
:func:`decode_and_crop` decodes a whole batch with ``torchvision.io.decode_jpeg``
on the device (nvJPEG on CUDA) and applies the same crop, bicubic resize and
flip that the CPU path applies with PIL.

A sample travels as ``bytes`` plus one int64 record (:data:`CROP_FIELDS`);
``default_collate`` keeps the bytes as a list and stacks the records. Files
the device decoder does not take (PNG, CMYK or other non-RGB JPEGs) are decoded
and cropped on the CPU as before and travel as raw RGB bytes with an identity
crop, so one batch may mix both.
"""

from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

ENCODED_JPEG = 0  # the file's bytes, to decode on the device
RAW_RGB = 1  # height x width x 3 uint8 pixels, already cropped and flipped on the CPU

# One sample's record: how its bytes are stored, the source image's size, the
# crop box in it (top, left, height, width), the output side and 1 if flipped.
CROP_FIELDS = ("kind", "source_height", "source_width", "top", "left", "height", "width", "size", "flip")


def crop_record(
    kind: int, source_size: tuple[int, int], box: tuple[int, int, int, int], size: int, flip: bool
) -> torch.Tensor:
    """The int64 record of :data:`CROP_FIELDS`; ``source_size`` is (height, width)."""
    return torch.tensor([kind, *source_size, *box, size, int(flip)], dtype=torch.int64)


def decode_and_crop(encoded: Sequence[bytes], records: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch of samples -> (B, 3, S, S) uint8 on ``device``.

    JPEGs are decoded together in one ``decode_jpeg`` call on ``device``; each
    image is then cropped, resized to S x S (bicubic with antialiasing, PIL's
    filter, rounded to uint8 as PIL does) and flipped. ``records`` (B, 9) stays
    on the CPU: its values are read on the host.
    """
    rows = records.tolist()
    if len(rows) != len(encoded):
        raise ValueError(f"{len(encoded)} encoded images but {len(rows)} crop records")
    jpeg_ids = [i for i, row in enumerate(rows) if row[0] == ENCODED_JPEG]
    images: dict[int, torch.Tensor] = {}
    if jpeg_ids:
        data = [torch.frombuffer(bytearray(encoded[i]), dtype=torch.uint8) for i in jpeg_ids]
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        images.update(zip(jpeg_ids, decoded, strict=True))
    out = []
    for i, (kind, src_h, src_w, top, left, height, width, size, flip) in enumerate(rows):
        if kind == RAW_RGB:
            pixels = torch.frombuffer(bytearray(encoded[i]), dtype=torch.uint8).view(src_h, src_w, 3)
            out.append(pixels.permute(2, 0, 1).to(device, non_blocking=True))
            continue
        if kind != ENCODED_JPEG:
            raise ValueError(f"unknown sample kind {kind} in crop record {i}")
        img = images[i]
        if tuple(img.shape[-2:]) != (src_h, src_w):
            raise ValueError(f"image {i} decoded to {tuple(img.shape[-2:])}, its header said {(src_h, src_w)}")
        img = TF.resized_crop(
            img, top, left, height, width, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True
        )
        out.append(TF.horizontal_flip(img) if flip else img)
    return torch.stack(out)
