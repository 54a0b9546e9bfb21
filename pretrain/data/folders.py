"""Listing images in the ImageNet folder layout (``<root>/<split>/<class>/<image>``)
or in any folder tree."""

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
# The splits whose class folders must agree: one class list gives the labels of all of them.
CLASS_SPLITS = ("train", "val")


class ImageFolderError(ValueError):
    """The folder does not have the expected layout."""


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _unlistable(err: OSError) -> None:
    # os.walk skips a folder it cannot list unless told otherwise: its images would be lost silently
    raise ImageFolderError(f"cannot list {err.filename}: {err.strerror}") from err


def _same_folder_twice(first: Path, again: Path, target: str) -> ImageFolderError:
    parent = Path(os.path.realpath(again.parent))
    if Path(target) == parent or Path(target) in parent.parents:
        return ImageFolderError(
            f"symlink loop: {again} points to {target}, a folder that contains it, so the images below it "
            "would be listed over and over. Remove the link."
        )
    return ImageFolderError(
        f"{again} and {first} are the same folder {target}: its images would be listed twice. "
        "Remove one of them (a symlink)."
    )


def iter_images(folder: str | Path) -> Iterator[Path]:
    """Image files below ``folder`` in sorted walk order (hidden entries skipped).
    Symlinked folders are followed, but a folder reached twice (a symlink loop or
    two links to one folder) is an error naming the link and its target."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{folder} is not a directory")
    visited = {os.path.realpath(folder): folder}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_unlistable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            path = Path(dirpath) / name
            target = os.path.realpath(path)
            if target in visited:
                raise _same_folder_twice(visited[target], path, target)
            visited[target] = path
        yield from (Path(dirpath) / f for f in sorted(filenames) if _is_image(f))


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursive, sorted, hidden entries skipped)."""
    return list(iter_images(folder))


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class folder names of one split."""
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_mismatches(root: Path, classes_by_split: dict[str, list[str]]) -> list[str]:
    """A line per class folder that one split of ``root`` has and another lacks: the
    splits would give that class different labels."""
    problems = []
    for name in sorted(set().union(*classes_by_split.values())):
        having = [split for split, names in classes_by_split.items() if name in names]
        problems += [
            f"{root / having[0] / name}: class not present in '{split}' (label mismatch)"
            for split in classes_by_split
            if split not in having
        ]
    return problems


def class_list_problems(root: Path, splits: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(classes, problems)`` of the splits of ``splits`` that exist under ``root``.

    ``classes`` is the sorted union of their class folders: the one list that gives
    every split its labels. Reported: a class folder missing from a split that
    others have, and a class folder without images (either would give the splits
    different labels for one class).
    """
    present = {split: class_folders(root / split) for split in splits if (root / split).is_dir()}
    problems = class_mismatches(root, present)
    problems += [
        f"{root / split / name}: class folder without images"
        for split, names in present.items()
        for name in names
        if next(iter_images(root / split / name), None) is None
    ]
    return sorted(set().union(*present.values())), problems


def scan_imagenet_split(
    root: str | Path, split: str, class_splits: Sequence[str] = CLASS_SPLITS
) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(samples, classes)`` of ``root/split/<class>/<image>``.

    Class indices follow the sorted class folder names shared by ``split`` and the
    ``class_splits`` present under ``root`` (as torchvision's ``ImageFolder`` does
    for one split), so train and val give one class the same label. A class folder
    that one split lacks or that holds no image is an error naming the folder.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise ImageFolderError(
            f"{split_dir} does not exist; expected the ImageNet layout {root}/{split}/<class>/<image>"
        )
    classes, problems = class_list_problems(root, list(dict.fromkeys([*class_splits, split])))
    if problems:
        raise ImageFolderError(
            f"the class folders under {root} do not give every split the same labels:\n  "
            + "\n  ".join(problems)
            + "\nEvery split needs the same class folders, each with at least one image "
            f"(run `python tools/check_dataset.py imagenet {root}` to list every problem)."
        )
    if not classes:
        raise ImageFolderError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image>")
    samples = [(path, idx) for idx, name in enumerate(classes) for path in list_images(split_dir / name)]
    return samples, classes
