"""Unlabelled images for pretraining, with the published SdAE/MAE augmentation."""

import io
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from mmengine.registry import DATASETS
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from .device_decode import ENCODED_JPEG, RAW_RGB, crop_record
from .folders import ImageFolderError, list_images
from .sampler import sample_random_state


class UnreadableImageError(RuntimeError):
    """An image file could not be decoded."""


def unreadable(path: str | Path, err: Exception) -> UnreadableImageError:
    return UnreadableImageError(
        f"cannot read image {path}: {err}. Run `python tools/check_dataset.py` on the dataset "
        "to list every unreadable file at once."
    )


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully as RGB; any failure names the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from err


@DATASETS.register_module()
class PretrainImageDataset(Dataset):
    """Every image below ``data_root/subdir`` (recursively), so both the ImageNet
    layout (``train/<class>/<image>``, labels ignored) and any plain folder work.

    Augmentation as published: RandomResizedCrop(``img_size``, scale=(0.2, 1.0),
    bicubic) and a horizontal flip. Samples are ``dict(inputs=uint8 (3, H, W))``;
    normalisation happens on the device in the model's data preprocessor.

    ``decode="device"`` moves JPEG decoding and the crop to the training device:
    the worker reads the file, parses its header for the size, draws the crop
    and flip exactly as the CPU path does (same calls, same random streams) and
    returns ``dict(inputs=<file bytes>, crop=<int64 record>, path=<file>)``; the model's data
    preprocessor decodes the batch on the device and applies them
    (:mod:`pretrain.data.device_decode`). Files the device decoder does not take
    (not JPEG, or a JPEG that is neither RGB nor greyscale) are decoded and
    cropped here and sent as raw pixels.
    """

    def __init__(
        self,
        data_root: str,
        subdir: str = "train",
        img_size: int = 224,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        decode: Literal["cpu", "device"] = "cpu",
    ) -> None:
        if decode not in ("cpu", "device"):
            raise ValueError(f"decode must be 'cpu' or 'device', got {decode!r}")
        folder = Path(data_root) / subdir
        if not folder.is_dir():
            raise ImageFolderError(
                f"{folder} does not exist; pretraining reads every image below data_root/subdir "
                f"(ImageNet: <root>/train/<class>/<image>; set subdir='' for a plain folder)"
            )
        self.files = list_images(folder)
        if not self.files:
            raise ImageFolderError(f"no images found below {folder}")
        self.crop = transforms.RandomResizedCrop(
            img_size, scale=tuple(crop_scale), interpolation=transforms.InterpolationMode.BICUBIC
        )
        self.flip = transforms.RandomHorizontalFlip() if hflip else None
        self.transform = transforms.Compose([self.crop] + ([self.flip] if hflip else []))
        self.img_size = img_size
        self.decode = decode
        self.metainfo = dict(root=str(folder), num_images=len(self.files), decode=decode)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        # Crops and flips from the sample's own seed when ResumableSampler gives one.
        with sample_random_state(index):
            if self.decode == "device":
                return self._encoded_sample(self.files[index])
            img = self.transform(load_rgb(self.files[index]))
        return dict(inputs=torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))

    def _encoded_sample(self, path: Path) -> dict:
        """The file's bytes and the crop the CPU path would draw for it (the same
        ``RandomResizedCrop.get_params`` and flip draw, in the same order)."""
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as header:  # lazy: reads the header only
                box = self.crop.get_params(header, self.crop.scale, self.crop.ratio)
                width, height = header.size
                on_device = header.format == "JPEG" and header.mode in ("RGB", "L")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise unreadable(path, err) from err
        flip = self.flip is not None and bool(torch.rand(1) < self.flip.p)
        if on_device:
            record = crop_record(ENCODED_JPEG, (height, width), box, self.img_size, flip)
            return dict(inputs=data, crop=record, path=str(path))
        img = transforms.functional.resized_crop(
            load_rgb(path), *box, [self.img_size, self.img_size], self.crop.interpolation, antialias=True
        )
        if flip:
            img = transforms.functional.hflip(img)
        size = (self.img_size, self.img_size)
        pixels = np.asarray(img).tobytes()
        record = crop_record(RAW_RGB, size, (0, 0, *size), self.img_size, False)
        return dict(inputs=pixels, crop=record, path=str(path))
