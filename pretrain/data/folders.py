"""Listing images in the ImageNet folder layout (``<root>/<split>/<class>/<image>``)
or in any folder tree."""

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderError(ValueError):
    """The folder does not have the expected layout."""


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursive, sorted, hidden entries skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{folder} is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f) and not f.startswith("."))
    return found


def scan_imagenet_split(root: str | Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(samples, classes)`` of ``root/split/<class>/<image>``; class indices follow
    the sorted class folder names, as torchvision's ``ImageFolder`` does."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise ImageFolderError(
            f"{split_dir} does not exist; expected the ImageNet layout {root}/{split}/<class>/<image>"
        )
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ImageFolderError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image>")
    samples = [(path, idx) for idx, name in enumerate(classes) for path in list_images(split_dir / name)]
    if not samples:
        raise ImageFolderError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}/<class>/")
    return samples, classes
