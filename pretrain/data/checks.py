"""Finding every unreadable or misplaced file of an image dataset up front."""

import math
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .folders import IMAGE_EXTENSIONS, ImageFolderError, class_mismatches, list_images
from .pretrain_dataset import UnreadableImageError, load_rgb


class DatasetDefectError(ValueError):
    """Files or annotations that would crash training or silently make it wrong."""


class DatasetSampleError(RuntimeError):
    """A sample failed to load; the message names its files."""


def refuse_defects(dataset: str, problems: list[str], check_command: str, shown: int = 20) -> None:
    """Raise one error listing ``problems`` (the first ``shown``) of ``dataset``, if any."""
    if not problems:
        return
    more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
    raise DatasetDefectError(
        f"{dataset}: {len(problems)} problem(s) that would crash training or make it silently wrong:\n  "
        + "\n  ".join(problems[:shown])
        + more
        + f"\nFix them (`{check_command}` lists every one) and start again."
    )


@dataclass
class DatasetReport:
    images: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    layout: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.layout


def _decode(path: Path) -> str | None:
    try:
        load_rgb(path)
    except UnreadableImageError as err:
        return str(err.__cause__ or err)
    return None


def find_unreadable(
    files: list[Path], workers: int = 2, progress: Callable[[int, int], None] | None = None
) -> list[tuple[Path, str]]:
    """Decode every file fully; returns ``(path, reason)`` for each failure."""
    bad = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, (path, reason) in enumerate(zip(files, pool.map(_decode, files, chunksize=64), strict=True), 1):
            if reason is not None:
                bad.append((path, reason))
            if progress is not None:
                progress(done, len(files))
    return bad


def _stray_entries(folder: Path, allowed_dirs: Iterable[str]) -> list[str]:
    allowed = set(allowed_dirs)
    return [
        f"{p}: unexpected {'folder' if p.is_dir() else 'file'}"
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".") and p.name not in allowed
    ]


def check_imagenet_layout(root: Path, splits: list[str]) -> tuple[list[str], list[Path]]:
    """Layout problems of ``root/<split>/<class>/<image>`` and the image files found.

    Reported: missing splits; files directly in a split folder (no class);
    non-image files and nested folders inside class folders; symlink loops; empty
    classes; a class folder that one split has and another lacks (the labels
    would differ, since indices follow the sorted class names).
    """
    problems, images = [], []
    class_sets = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(f"{split_dir}: missing (expected {root}/{split}/<class>/<image>)")
            continue
        classes = []
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                problems.append(f"{entry}: file outside any class folder")
                continue
            classes.append(entry.name)
            for item in sorted(entry.iterdir()):
                if item.name.startswith("."):
                    continue
                if item.is_dir():
                    problems.append(f"{item}: nested folder inside class {entry.name}")
                elif item.suffix.lower() not in IMAGE_EXTENSIONS:
                    problems.append(f"{item}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            try:
                found = list_images(entry)  # what the datasets read, so symlink loops are found too
            except ImageFolderError as err:
                problems.append(str(err))
                continue
            images += found
            if not found:
                problems.append(f"{entry}: class folder without images")
        if not classes:
            problems.append(f"{split_dir}: no class folders")
        class_sets[split] = classes
    problems += class_mismatches(root, class_sets)
    return problems, images


def check_dataset(
    root: str | Path,
    layout: str = "imagenet",
    splits: list[str] | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """``layout="imagenet"``: ``root/<split>/<class>/<image>``; ``"ade20k"``:
    ``ADEChallengeData2016``; ``"coco"``: COCO 2017; ``"folder"``: any image tree."""
    root = Path(root)
    if not root.is_dir():
        return DatasetReport(layout=[f"{root}: not a directory"])
    if layout == "imagenet":
        problems, images = check_imagenet_layout(root, splits or ["train", "val"])
    elif layout == "ade20k":
        problems, images = check_ade20k_layout(root)
    elif layout == "coco":
        problems, images = check_coco_layout(root)
    elif layout == "folder":
        try:
            images = list_images(root)
            problems = [] if images else [f"{root}: no image files"]
        except ImageFolderError as err:
            images, problems = [], [str(err)]
    else:
        raise ValueError(f"layout must be 'imagenet', 'ade20k', 'coco' or 'folder', got {layout!r}")
    return DatasetReport(images=len(images), unreadable=find_unreadable(images, workers, progress), layout=problems)


ADE_SPLITS = ("training", "validation")


def ade_pair_problems(image: Path, label_map: Path | None) -> list[str]:
    """What makes one ADE20K image / label map pair crash training or train on wrong
    labels, from the file headers only (cheap): an unreadable image, a missing or
    unreadable label map, a label map that is not 8-bit single-channel or whose
    size differs from its image's."""
    try:
        with Image.open(image) as img:
            size = img.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return [f"{image}: unreadable image ({err})"]
    if label_map is None:
        return []
    if not label_map.is_file():
        return [f"{image}: no label map {label_map}"]
    try:
        with Image.open(label_map) as ann:
            mode, label_size = ann.mode, ann.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return [f"{label_map}: unreadable label map ({err})"]
    if mode not in ("L", "P"):
        return [f"{label_map}: label map mode {mode}, expected 8-bit single channel (mode L or P)"]
    if label_size != size:
        return [f"{label_map}: size {label_size} differs from its image {image.name} {size}; expected {size}"]
    return []


def check_ade20k_layout(root: Path) -> tuple[list[str], list[Path]]:
    """``root`` is the folder holding ``ADEChallengeData2016`` (or that folder itself).
    Reported: missing folders; images without a label map and label maps without an
    image; label maps that are not 8-bit single-channel, differ in size from their
    image, or hold values above 150; stray files."""
    import numpy as np

    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    problems, images = [], []
    for split in ADE_SPLITS:
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        missing = [d for d in (img_dir, ann_dir) if not d.is_dir()]
        if missing:
            problems += [
                f"{d}: missing (expected ADEChallengeData2016/{{images,annotations}}/{split})" for d in missing
            ]
            continue
        imgs = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
        anns = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
        problems += [f"{p}: unexpected file" for p in sorted(img_dir.iterdir()) if p.stem not in imgs]
        problems += [f"{p}: unexpected file" for p in sorted(ann_dir.iterdir()) if p.stem not in anns]
        problems += [f"{imgs[s]}: no label map {ann_dir / (s + '.png')}" for s in sorted(imgs.keys() - anns.keys())]
        problems += [f"{anns[s]}: label map without an image" for s in sorted(anns.keys() - imgs.keys())]
        for stem in sorted(imgs.keys() & anns.keys()):
            images.append(imgs[stem])
            pair = ade_pair_problems(imgs[stem], anns[stem])
            problems += pair
            if pair:
                continue
            try:
                with Image.open(anns[stem]) as ann:
                    top = int(np.asarray(ann).max())
            except OSError as err:
                problems.append(f"{anns[stem]}: unreadable label map ({err})")
                continue
            if top > 150:
                problems.append(f"{anns[stem]}: label {top} > 150 (ADE: 0 = ignore, 1..150 classes)")
    return problems, images


COCO_SPLITS = ("train2017", "val2017")


def _coco_box(bbox: object) -> tuple[float, float, float, float] | None:
    """``bbox`` as ``(x, y, w, h)`` if it is four finite numbers."""
    numbers = isinstance(bbox, list | tuple) and len(bbox) == 4
    if numbers and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return tuple(float(v) for v in bbox)
    return None


def _segmentation_problem(segmentation: object) -> str | None:
    if isinstance(segmentation, dict):  # RLE (crowd regions)
        if segmentation.get("counts") is None or segmentation.get("size") is None:
            return f"RLE segmentation {sorted(segmentation)} needs 'counts' and 'size'"
        return None
    if not isinstance(segmentation, list):
        return f"segmentation {segmentation!r} is neither a polygon list nor an RLE dict"
    if not segmentation:
        return "segmentation: [] (no polygon); give the object's polygons or remove the annotation"
    if not all(isinstance(p, list) for p in segmentation):
        return f"segmentation {segmentation!r} is not a list of polygons (lists of x, y coordinates)"
    # mmdet drops a degenerate polygon beside usable ones (as detectron2 does);
    # an object left with none would be ignored silently.
    if not any(len(p) >= 6 and len(p) % 2 == 0 for p in segmentation):
        lengths = [len(p) for p in segmentation]
        return (
            f"no usable polygon: polygons need an even number (>= 6) of coordinates, got {lengths}; "
            "mmdet would ignore the object"
        )
    return None


def coco_annotation_problems(ann: dict, width: int, height: int, category_ids: Collection[int]) -> list[str]:
    """What makes one COCO instance annotation crash mmdet's loading or be dropped
    silently: a bbox that is not ``[x, y, w, h]`` or lies outside the ``width`` x
    ``height`` image, an unknown category, a missing, empty (``[]``) or malformed
    segmentation (no polygon with an even number, >= 6, of coordinates). Zero-size
    boxes are not reported: mmdet drops them, and official COCO 2017 has a few."""
    problems = []
    box = _coco_box(ann.get("bbox"))
    if box is None:
        problems.append(f"bbox {ann.get('bbox')!r} is not [x, y, width, height]")
    elif box[0] < 0 or box[1] < 0 or box[0] + box[2] > width + 1 or box[1] + box[3] > height + 1:
        problems.append(f"bbox {ann.get('bbox')} lies outside the {width}x{height} image")
    if ann.get("category_id") not in category_ids:
        problems.append(f"unknown category_id {ann.get('category_id')}")
    if "segmentation" not in ann:
        problems.append("no segmentation (instance masks need a polygon list or an RLE dict)")
    else:
        segmentation = _segmentation_problem(ann["segmentation"])
        problems += [segmentation] if segmentation else []
    return problems


def check_coco_layout(root: Path, splits: tuple[str, ...] = COCO_SPLITS) -> tuple[list[str], list[Path]]:
    """``root/annotations/instances_<split>.json`` and ``root/<split>/``. Reported:
    missing files; duplicate ids; annotations pointing at unknown images or
    categories; images listed but absent or empty; boxes outside their image;
    missing, empty or malformed segmentations."""
    import json

    problems, images = [], []
    for split in splits:
        ann_file, img_dir = root / "annotations" / f"instances_{split}.json", root / split
        if not ann_file.is_file() or not img_dir.is_dir():
            problems += [f"{p}: missing" for p in (ann_file, img_dir) if not p.exists()]
            continue
        try:
            doc = json.loads(ann_file.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{ann_file}: not valid JSON ({err})")
            continue
        missing_keys = [k for k in ("images", "annotations", "categories") if k not in doc]
        if missing_keys:
            problems.append(f"{ann_file}: no {missing_keys}")
            continue
        by_id = {}
        for img in doc["images"]:
            if img["id"] in by_id:
                problems.append(f"{ann_file}: duplicate image id {img['id']}")
            by_id[img["id"]] = img
            path = img_dir / img["file_name"]
            if path.is_file():
                images.append(path)
            else:
                problems.append(f"{path}: listed in {ann_file.name} but missing")
        categories = {c["id"] for c in doc["categories"]}
        seen = set()
        for ann in doc["annotations"]:
            where = f"{ann_file.name} annotation {ann.get('id')}"
            if ann.get("id") in seen:
                problems.append(f"{where}: duplicate annotation id")
            seen.add(ann.get("id"))
            img = by_id.get(ann.get("image_id"))
            if img is None:
                problems.append(f"{where}: unknown image_id {ann.get('image_id')}")
                continue
            where += f" (image {img['id']}, {img['file_name']})"
            found = coco_annotation_problems(ann, img["width"], img["height"], categories)
            problems += [f"{where}: {p}" for p in found]
    return problems, images
