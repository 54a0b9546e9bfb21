"""Finding every unreadable or misplaced file of an image dataset up front."""

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .folders import IMAGE_EXTENSIONS, list_images
from .pretrain_dataset import UnreadableImageError, load_rgb


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
    non-image files and nested folders inside class folders; empty classes;
    classes of a later split that the first split does not have (their labels
    would be wrong, since indices follow the sorted class names).
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
            found = 0
            for item in sorted(entry.iterdir()):
                if item.name.startswith("."):
                    continue
                if item.is_dir():
                    problems.append(f"{item}: nested folder inside class {entry.name}")
                elif item.suffix.lower() not in IMAGE_EXTENSIONS:
                    problems.append(f"{item}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
                else:
                    images.append(item)
                    found += 1
            if not found:
                problems.append(f"{entry}: class folder without images")
        if not classes:
            problems.append(f"{split_dir}: no class folders")
        class_sets[split] = set(classes)
    if len(class_sets) > 1:
        first, reference = next(iter(class_sets.items()))
        for split, classes in class_sets.items():
            for name in sorted(classes - reference):
                problems.append(f"{root / split / name}: class not present in '{first}' (label mismatch)")
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
        images = list_images(root)
        problems = [] if images else [f"{root}: no image files"]
    else:
        raise ValueError(f"layout must be 'imagenet', 'ade20k', 'coco' or 'folder', got {layout!r}")
    return DatasetReport(images=len(images), unreadable=find_unreadable(images, workers, progress), layout=problems)


ADE_SPLITS = ("training", "validation")


def check_ade20k_layout(root: Path) -> tuple[list[str], list[Path]]:
    """``root`` is the folder holding ``ADEChallengeData2016`` (or that folder itself).
    Reported: missing folders; images without a label map and label maps without an
    image; label maps that are not 8-bit single-channel, differ in size from their
    image, or hold values above 150; stray files."""
    import numpy as np
    from PIL import Image

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
            try:
                with Image.open(anns[stem]) as ann, Image.open(imgs[stem]) as img:
                    if ann.mode not in ("L", "P"):
                        problems.append(f"{anns[stem]}: label map mode {ann.mode}, expected 8-bit single channel")
                        continue
                    if ann.size != img.size:
                        problems.append(f"{anns[stem]}: size {ann.size} differs from its image {img.size}")
                    top = int(np.asarray(ann).max())
                    if top > 150:
                        problems.append(f"{anns[stem]}: label {top} > 150 (ADE: 0 = ignore, 1..150 classes)")
            except OSError as err:
                problems.append(f"{anns[stem]}: unreadable label map ({err})")
    return problems, images


COCO_SPLITS = ("train2017", "val2017")


def check_coco_layout(root: Path, splits: tuple[str, ...] = COCO_SPLITS) -> tuple[list[str], list[Path]]:
    """``root/annotations/instances_<split>.json`` and ``root/<split>/``. Reported:
    missing files; duplicate ids; annotations pointing at unknown images or
    categories; images listed but absent; boxes outside their image or empty;
    malformed polygon segmentations."""
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
            if ann.get("category_id") not in categories:
                problems.append(f"{where}: unknown category_id {ann.get('category_id')}")
            x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > img["width"] + 1 or y + h > img["height"] + 1:
                problems.append(
                    f"{where}: bbox {ann.get('bbox')} empty or outside the {img['width']}x{img['height']} image"
                )
            segmentation = ann.get("segmentation")
            if isinstance(segmentation, list) and not all(
                isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation
            ):
                problems.append(f"{where}: polygons need an even number (>= 6) of coordinates")
    return problems, images
