"""Unlabelled images for pretraining, with the published SdAE/MAE augmentation."""

from pathlib import Path

import numpy as np
import torch
from mmengine.registry import DATASETS
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from .folders import ImageFolderError, list_images


class UnreadableImageError(RuntimeError):
    """An image file could not be decoded."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully as RGB; any failure names the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(
            f"cannot read image {path}: {err}. Run `python tools/check_dataset.py` on the dataset "
            "to list every unreadable file at once."
        ) from err


@DATASETS.register_module()
class PretrainImageDataset(Dataset):
    """Every image below ``data_root/subdir`` (recursively), so both the ImageNet
    layout (``train/<class>/<image>``, labels ignored) and any plain folder work.

    Augmentation as published: RandomResizedCrop(``img_size``, scale=(0.2, 1.0),
    bicubic) and a horizontal flip. Samples are ``dict(inputs=uint8 (3, H, W))``;
    normalisation happens on the device in the model's data preprocessor.
    """

    def __init__(
        self,
        data_root: str,
        subdir: str = "train",
        img_size: int = 224,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
    ) -> None:
        folder = Path(data_root) / subdir
        if not folder.is_dir():
            raise ImageFolderError(
                f"{folder} does not exist; pretraining reads every image below data_root/subdir "
                f"(ImageNet: <root>/train/<class>/<image>; set subdir='' for a plain folder)"
            )
        self.files = list_images(folder)
        if not self.files:
            raise ImageFolderError(f"no images found below {folder}")
        ops = [
            transforms.RandomResizedCrop(
                img_size, scale=tuple(crop_scale), interpolation=transforms.InterpolationMode.BICUBIC
            )
        ]
        if hflip:
            ops.append(transforms.RandomHorizontalFlip())
        self.transform = transforms.Compose(ops)
        self.metainfo = dict(root=str(folder), num_images=len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        img = self.transform(load_rgb(self.files[index]))
        return dict(inputs=torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
