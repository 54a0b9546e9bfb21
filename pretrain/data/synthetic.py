"""Small synthetic datasets in the official ImageNet, ADE20K and COCO 2017
layouts, deterministic from a seed.

Classes are texture families (stripes at a class-specific angle, checkerboards,
rings, dots, blobs, ...) or shapes with a class-specific colour, drawn with
random frequency, phase, placement and noise, so that they are learnable but no
two images are alike.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PATTERNS = ("hstripes", "vstripes", "diag", "checker", "rings", "dots", "blobs", "waves")


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) field in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    freq = rng.uniform(3.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "hstripes":
        field = np.sin(2 * np.pi * freq * yy + phase)
    elif kind == "vstripes":
        field = np.sin(2 * np.pi * freq * xx + phase)
    elif kind == "diag":
        field = np.sin(2 * np.pi * freq * (xx + yy) / np.sqrt(2) + phase)
    elif kind == "checker":
        field = np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy + phase)
    elif kind == "rings":
        cy, cx = rng.uniform(0.3, 0.7, size=2)
        field = np.sin(2 * np.pi * freq * np.hypot(xx - cx, yy - cy) + phase)
    elif kind == "dots":
        field = np.cos(2 * np.pi * freq * xx + phase) + np.cos(2 * np.pi * freq * yy + phase) - 1.0
    elif kind == "blobs":
        field = np.full((size, size), -1.0)
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(0.15, 0.85, size=2)
            radius = rng.uniform(0.08, 0.2)
            field[np.hypot(xx - cx, yy - cy) < radius] = 1.0
    elif kind == "waves":
        field = np.sin(2 * np.pi * freq * yy + 2.0 * np.sin(2 * np.pi * 2 * xx) + phase)
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    return (np.clip(field, -1, 1) + 1) / 2


def synthetic_image(class_index: int, size: int, rng: np.random.Generator) -> Image.Image:
    field = _pattern(PATTERNS[class_index % len(PATTERNS)], size, rng)[..., None]
    fg, bg = rng.uniform(0, 255, size=(2, 3))
    img = field * fg + (1 - field) * bg + rng.normal(0, 8, size=(size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def class_names(num_classes: int) -> list[str]:
    """WordNet-id-like folder names, as in ImageNet."""
    return [f"n{9_000_000 + i:08d}" for i in range(num_classes)]


def write_imagenet_like(
    out: str | Path,
    num_classes: int = 8,
    train_per_class: int = 40,
    val_per_class: int = 10,
    image_size: int = 112,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``out/{train,val}/<class>/<image>.JPEG``; returns the image count per split."""
    if not 1 <= num_classes <= len(PATTERNS):
        raise ValueError(f"num_classes must be in 1..{len(PATTERNS)} (one texture family each)")
    out = Path(out)
    counts = {}
    for split_index, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
        for class_index, name in enumerate(class_names(num_classes)):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([seed, split_index, class_index, i])
                img = synthetic_image(class_index, image_size, rng)
                img.save(folder / f"{name}_{split}_{i:05d}.JPEG", quality=92)
        counts[split] = num_classes * per_class
    return counts


def synthetic_scene(size: int, num_classes: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """An image and its ADE-style label map (0 = ignore/other, 1..num_classes).

    The background is class 1; 2-5 objects (ellipses or rectangles) of other
    classes are drawn on top. Each class has a fixed hue and texture family, so
    pixels are learnable from local appearance; a 1-pixel ring of label 0 around
    each object mimics ADE's unlabelled boundaries.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    labels = np.ones((size, size), dtype=np.uint8)
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.integers(2, num_classes + 1))
        cy, cx = rng.uniform(0.15, 0.85, size=2)
        ry, rx = rng.uniform(0.08, 0.3, size=2)
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            ring = (((yy - cy) / (ry + 1.5 / size)) ** 2 + ((xx - cx) / (rx + 1.5 / size)) ** 2 <= 1) & ~inside
        else:
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            ring = (np.abs(yy - cy) <= ry + 1.5 / size) & (np.abs(xx - cx) <= rx + 1.5 / size) & ~inside
        labels[ring] = 0
        labels[inside] = cls
    img = np.zeros((size, size, 3))
    for cls in np.unique(labels):
        if cls == 0:
            continue
        palette = np.random.default_rng([cls, 7])  # fixed per class, same in every image
        colour = palette.uniform(40, 215, size=3)
        field = _pattern(PATTERNS[int(cls) % len(PATTERNS)], size, rng)[..., None]
        texture = colour + (field - 0.5) * 60
        img[labels == cls] = texture[labels == cls]
    img[labels == 0] = 128
    img = np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img), Image.fromarray(labels, mode="L")


def write_ade20k_like(
    out: str | Path,
    num_train: int = 40,
    num_val: int = 10,
    image_size: int = 128,
    num_classes: int = 8,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``out/ADEChallengeData2016/{images,annotations}/{training,validation}``
    with ``ADE_{train,val}_%08d.{jpg,png}``; label PNGs use ADE's 0 = ignore."""
    if not 2 <= num_classes <= 150:
        raise ValueError("num_classes must be in 2..150 (ADE20K has 150)")
    root = Path(out) / "ADEChallengeData2016"
    counts = {}
    for split_index, (split, prefix, count) in enumerate(
        (("training", "ADE_train", num_train), ("validation", "ADE_val", num_val))
    ):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, labels = synthetic_scene(image_size, num_classes, np.random.default_rng([seed, split_index, i]))
            img.save(root / "images" / split / f"{prefix}_{i + 1:08d}.jpg", quality=92)
            labels.save(root / "annotations" / split / f"{prefix}_{i + 1:08d}.png")
        counts[split] = count
    return counts


COCO_CATEGORIES = ("box", "disc", "triangle")


def _object_polygon(kind: int, cx: float, cy: float, rx: float, ry: float) -> list[float]:
    if kind == 0:  # box
        points = [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)]
    elif kind == 1:  # disc: a 16-gon
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        points = list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles), strict=True))
    else:  # triangle
        points = [(cx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)]
    return [round(float(v), 2) for point in points for v in point]


def write_coco_like(
    out: str | Path,
    num_train: int = 24,
    num_val: int = 8,
    image_size: tuple[int, int] = (160, 128),
    seed: int = 0,
) -> dict[str, int]:
    """Write ``out/{train2017,val2017}/*.jpg`` and ``out/annotations/instances_{train,val}2017.json``
    (COCO 2017 layout, polygon segmentations). Objects of 3 categories - boxes,
    discs, triangles, each with its own colour and texture - on a textured
    background; width x height = ``image_size`` (non-square on purpose)."""

    width, height = image_size
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split_index, (split, count) in enumerate((("train2017", num_train), ("val2017", num_val))):
        (out / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            background = _pattern(PATTERNS[int(rng.integers(len(PATTERNS)))], max(image_size), rng)
            canvas = np.repeat(background[:height, :width, None] * 60 + 90, 3, axis=2)
            for _ in range(rng.integers(1, 5)):
                kind = int(rng.integers(len(COCO_CATEGORIES)))
                rx, ry = rng.uniform(0.08, 0.22) * width, rng.uniform(0.1, 0.28) * height
                cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
                polygon = _object_polygon(kind, cx, cy, rx, ry)
                mask_img = Image.new("L", (width, height), 0)
                ImageDraw.Draw(mask_img).polygon(polygon, fill=1)
                mask = np.asarray(mask_img).astype(bool)
                if mask.sum() < 16:
                    continue
                colour = np.random.default_rng([kind, 11]).uniform(30, 225, size=3)
                texture = _pattern(PATTERNS[kind * 2 % len(PATTERNS)], max(image_size), rng)[:height, :width, None]
                canvas[mask] = (colour + (texture - 0.5) * 50)[mask]
                xs, ys = polygon[0::2], polygon[1::2]
                annotations.append(
                    {
                        "id": len(annotations) + 1 + split_index * 100000,
                        "image_id": i + 1,
                        "category_id": kind + 1,
                        "segmentation": [polygon],
                        "area": float(mask.sum()),
                        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                        "iscrowd": 0,
                    }
                )
            canvas = np.clip(canvas + rng.normal(0, 5, size=canvas.shape), 0, 255).astype(np.uint8)
            name = f"{i + 1:012d}.jpg"
            Image.fromarray(canvas).save(out / split / name, quality=92)
            images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(COCO_CATEGORIES)]
        document = {"images": images, "annotations": annotations, "categories": categories}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
        counts[split] = count
    return counts
