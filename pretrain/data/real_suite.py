"""The real-image mini suite: classification, semantic segmentation and instance
segmentation on real pixels shipped inside scikit-learn and scikit-image (read
through their own loaders: nothing is downloaded), written in the official
on-disk layouts the full recipes read, deterministically from a seed.

``write_real_suite(out)`` writes::

    out/imagenet/{train,val}/<material>/*.png        ImageNet folder layout
    out/ade/ADEChallengeData2016/{images,annotations}/{training,validation}/
                                                      ADE20K layout (label 0 = ignore)
    out/coco/{train2017,val2017}/*.jpg, out/coco/annotations/instances_{train,val}2017.json
                                                      COCO 2017 layout, RLE masks
    out/pretrain/train/{imagenet,ade,coco}/*          the union of the train splits, unlabelled
    out/recipe.json, out/provenance.json

* **Materials** (:data:`MATERIALS`): eight photographs of a surface - brick,
  grass, gravel, the moon, a cell culture, the Hubble deep field, an
  immunohistochemistry slide, printed text - in grey levels (so a class is its
  texture, not its colour). Every photograph is split once, before anything is
  cropped: training pixels come only from its left half, validation pixels
  only from its right half.
* **Classification** (``imagenet``): square patches of a material (side drawn
  from 24-128 px, within the split's half), resized to ``cls_size``; the class
  is the material.
* **Segmentation** (``ade``): ``seg_size`` mosaics of 2-4 materials (Voronoi
  cells of random seeds); each cell is filled with a crop of its material's
  half at a random scale; the label map holds material index + 1 (ADE's
  ``reduce_zero_label`` convention: 0 is "other", ignored).
* **Instances** (``coco``): real objects with the masks they are pasted with -
  handwritten digits (scikit-learn ``load_digits``; mask = the ink), faces
  (scikit-image LFW subset; mask = an ellipse over the face) and coins (the 21
  separable coins of scikit-image ``coins``; mask = the coin's own segment) - on
  a crop of a material. Instances are split before pasting (digits and faces by
  a stratified / fixed index split, coins: every third coin validation); objects
  never overlap, so every box and RLE mask is exactly the pasted pixels.

``provenance.json`` lists, for every written file, the source rectangles and
object instances its pixels come from, so the split can be checked (tests do).
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .real import existing_recipe, package_versions

RECIPE_VERSION = 1
# material -> (scikit-image loader name, row range used; None = all rows)
MATERIALS: dict[str, tuple[str, tuple[int, int] | None]] = {
    "brick": ("brick", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
    "moon": ("moon", None),
    "cell": ("cell", None),
    "hubble": ("hubble_deep_field", None),
    "ihc": ("immunohistochemistry", None),
    "text": ("text", None),
}
OBJECTS = ("digit", "face", "coin")
SPLITS = ("train", "val")
Rect = tuple[int, int, int, int]  # top, left, bottom, right (exclusive) in the source photograph


def _grey(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3:
        pixels = np.asarray(Image.fromarray(pixels[..., :3]).convert("L"))
    return pixels.astype(np.uint8)


def load_materials() -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name, (loader, rows) in MATERIALS.items():
        pixels = _grey(np.asarray(getattr(skimage.data, loader)()))
        out[name] = pixels if rows is None else pixels[rows[0] : rows[1]]
    return out


def split_columns(width: int, split: str) -> tuple[int, int]:
    """Columns of a source photograph that a split may use: left half train, right half val."""
    return (0, width // 2) if split == "train" else (width // 2, width)


def _crop(
    pixels: np.ndarray, split: str, side_range: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, Rect]:
    """A random square crop inside the split's half of ``pixels``."""
    height, width = pixels.shape
    lo, hi = split_columns(width, split)
    side = int(rng.integers(side_range[0], min(side_range[1], height, hi - lo) + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(lo, hi - side + 1))
    return pixels[top : top + side, left : left + side], (top, left, top + side, left + side)


def _resize(pixels: np.ndarray, size: int | tuple[int, int], resample=Image.Resampling.BICUBIC) -> np.ndarray:
    size = (size, size) if isinstance(size, int) else size
    return np.asarray(Image.fromarray(pixels).resize(size, resample))


def _rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).convert("RGB")


# --------------------------------------------------------------------------- classification


def write_classification(
    out: Path, materials: dict[str, np.ndarray], per_class: dict[str, int], size: int, seed: int
) -> tuple[dict[str, int], dict[str, list]]:
    counts, provenance = {}, {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 10, split_index])
        counts[split] = 0
        for name, pixels in materials.items():
            for i in range(per_class[split]):
                patch, rect = _crop(pixels, split, (24, 128), rng)
                path = out / split / name / f"{name}_{i:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                _rgb(_resize(patch, size)).save(path)
                provenance[str(path.relative_to(out.parent))] = [[name, *rect]]
                counts[split] += 1
    return counts, provenance


# --------------------------------------------------------------------------- segmentation


def mosaic(
    materials: dict[str, np.ndarray], split: str, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list]:
    """A ``size`` x ``size`` mosaic of 2-4 materials and its label map (index + 1)."""
    names = list(materials)
    chosen = rng.choice(len(names), size=int(rng.integers(2, 5)), replace=False)
    seeds = rng.uniform(0, size, size=(len(chosen), 2))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    image = np.zeros((size, size), np.uint8)
    labels = np.zeros((size, size), np.uint8)
    sources = []
    for k, index in enumerate(chosen):
        name = names[index]
        patch, rect = _crop(materials[name], split, (size // 2, 3 * size), rng)
        inside = cell == k
        image[inside] = _resize(patch, size)[inside]
        labels[inside] = index + 1
        sources.append([name, *rect])
    return image, labels, sources


def write_segmentation(
    out: Path, materials: dict[str, np.ndarray], count: dict[str, int], size: int, seed: int
) -> tuple[dict[str, int], dict[str, list]]:
    base = out / "ADEChallengeData2016"
    counts, provenance = {}, {}
    for split_index, (split, ade_split) in enumerate(zip(SPLITS, ("training", "validation"), strict=True)):
        rng = np.random.default_rng([seed, 20, split_index])
        (base / "images" / ade_split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / ade_split).mkdir(parents=True, exist_ok=True)
        for i in range(count[split]):
            image, labels, sources = mosaic(materials, split, size, rng)
            stem = f"ADE_{ade_split}_{i + 1:08d}"
            img_path = base / "images" / ade_split / f"{stem}.jpg"
            _rgb(image).save(img_path, quality=95)
            Image.fromarray(labels, mode="L").save(base / "annotations" / ade_split / f"{stem}.png")
            provenance[str(img_path.relative_to(out.parent))] = sources
        counts[split] = count[split]
    return counts, provenance


# --------------------------------------------------------------------------- instances


def digit_instances(seed: int) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """(instance id, grey pixels, mask) per split: the ink of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng([seed, 30])
    train = np.zeros(len(digits.images), bool)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == label))
        train[members[: round(0.8 * len(members))]] = True
    out = {"train": [], "val": []}
    for i, (image, is_train) in enumerate(zip(digits.images, train, strict=True)):
        ink = np.clip(np.rint(image * 255.0 / 16.0), 0, 255).astype(np.uint8)
        big = _resize(ink, 32)
        out["train" if is_train else "val"].append((f"digit:{i}", big, big >= 96))
    return out


def face_instances() -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """The 100 LFW-subset faces (first 70 train, last 30 val), each under an ellipse mask."""
    import skimage.data

    faces = np.asarray(skimage.data.lfw_subset())[:100]
    if faces.dtype != np.uint8:
        faces = np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)
    size = 32
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    ellipse = ((yy - size / 2) / (0.5 * size)) ** 2 + ((xx - size / 2) / (0.4 * size)) ** 2 <= 1
    return {
        split: [(f"face:{i}", _resize(faces[i], size), ellipse) for i in indices]
        for split, indices in (("train", range(70)), ("val", range(70, 100)))
    }


def coin_instances() -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """The coins of scikit-image's ``coins`` photograph, each cut with its own segment
    (Otsu threshold of the smoothed photograph, holes filled); split by instance
    (segments are disjoint): every third coin validation, the others train. Segments that are not
    one round coin (specks, the touching coins of the top row) are left out."""
    import skimage.data
    from scipy import ndimage
    from skimage.filters import gaussian, threshold_otsu

    pixels = np.asarray(skimage.data.coins())
    smooth = gaussian(pixels, sigma=2, preserve_range=True)
    segments, _ = ndimage.label(ndimage.binary_fill_holes(smooth > threshold_otsu(smooth)))
    out = {"train": [], "val": []}
    kept = 0
    for index, box in enumerate(ndimage.find_objects(segments), start=1):
        mask = segments[box] == index
        height, width = mask.shape
        if mask.sum() < 400 or not 0.8 <= height / width <= 1.25:
            continue
        out["val" if kept % 3 == 2 else "train"].append((f"coin:{index}", pixels[box].copy(), mask))
        kept += 1
    return out


def _place(obj: tuple[str, np.ndarray, np.ndarray], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Object pixels and mask resized so the longer side is ``side`` (mask: nearest)."""
    _, pixels, mask = obj
    h, w = mask.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized_mask = _resize(mask.astype(np.uint8) * 255, size, Image.Resampling.NEAREST) > 127
    return _resize(pixels, size), resized_mask


def scene(
    materials: dict[str, np.ndarray],
    objects: dict[str, list],
    split: str,
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict], list]:
    """A background crop with 1-2 non-overlapping objects (longer side a third to
    two thirds of the image); returns the image, the annotations (category index,
    exact mask) and the sources used."""
    names = list(materials)
    name = names[int(rng.integers(len(names)))]
    patch, rect = _crop(materials[name], split, (size, 3 * size), rng)
    canvas = _resize(patch, size).copy()
    sources: list = [[name, *rect]]
    occupied = np.zeros((size, size), bool)
    annotations = []
    for _ in range(int(rng.integers(1, 3))):
        category = int(rng.integers(len(OBJECTS)))
        pool = objects[OBJECTS[category]][split]
        obj = pool[int(rng.integers(len(pool)))]
        pixels, mask = _place(obj, int(rng.integers(size // 3, 2 * size // 3 + 1)))
        h, w = mask.shape
        for _attempt in range(20):
            top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            if not occupied[max(top - 1, 0) : top + h + 1, max(left - 1, 0) : left + w + 1].any():
                break
        else:
            continue  # no free place for it: leave it out
        full = np.zeros((size, size), bool)
        full[top : top + h, left : left + w] = mask
        canvas[top : top + h, left : left + w][mask] = pixels[mask]
        occupied[top : top + h, left : left + w] = True
        annotations.append({"category": category, "mask": full})
        sources.append(obj[0])
    return canvas, annotations, sources


def coco_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """A COCO annotation with a compressed RLE mask and the mask's exact box."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": float(mask.sum()),
        "bbox": [x, y, w, h],
        "iscrowd": 0,
    }


def write_instances(
    out: Path, materials: dict[str, np.ndarray], count: dict[str, int], size: int, seed: int
) -> tuple[dict[str, int], dict[str, list]]:
    objects = {"digit": digit_instances(seed), "face": face_instances(), "coin": coin_instances()}
    categories = [{"id": k + 1, "name": n, "supercategory": "object"} for k, n in enumerate(OBJECTS)]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts, provenance = {}, {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 40, split_index])
        folder = out / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count[split]):
            canvas, objs, sources = scene(materials, objects, split, size, rng)
            image_id = i + 1
            name = f"{image_id:012d}.jpg"
            _rgb(canvas).save(folder / name, quality=95)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for obj in objs:
                annotations.append(coco_annotation(obj["mask"], len(annotations) + 1, image_id, obj["category"] + 1))
            provenance[str((folder / name).relative_to(out.parent))] = sources
        document = {"images": images, "annotations": annotations, "categories": categories}
        (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))
        counts[split] = count[split]
    return counts, provenance


# --------------------------------------------------------------------------- all of it


def write_real_suite(
    out: str | Path,
    seed: int = 0,
    cls_size: int = 64,
    cls_per_class: tuple[int, int] = (80, 40),
    seg_size: int = 128,
    seg_count: tuple[int, int] = (240, 60),
    det_size: int = 96,
    det_count: tuple[int, int] = (240, 60),
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the three datasets and the pretraining set under ``out`` (see the
    module docstring); returns the recipe. A folder with the same recipe is left
    as is; a different recipe or a non-empty folder without one is an error."""
    out = Path(out)
    args = dict(
        recipe_version=RECIPE_VERSION,
        seed=seed,
        cls_size=cls_size,
        cls_per_class=list(cls_per_class),
        seg_size=seg_size,
        seg_count=list(seg_count),
        det_size=det_size,
        det_count=list(det_count),
    )
    existing = existing_recipe(out, args)
    if existing is not None:
        return existing
    say = progress or (lambda message: None)
    materials = load_materials()
    counts, provenance = {}, {}
    say(f"classification: {len(materials)} materials (ImageNet layout)")
    counts["imagenet"], prov = write_classification(
        out / "imagenet", materials, dict(zip(SPLITS, cls_per_class, strict=True)), cls_size, seed
    )
    provenance.update(prov)
    say("segmentation: material mosaics (ADE20K layout)")
    counts["ade"], prov = write_segmentation(
        out / "ade", materials, dict(zip(SPLITS, seg_count, strict=True)), seg_size, seed
    )
    provenance.update(prov)
    say("instances: digits, faces and coins on materials (COCO layout)")
    counts["coco"], prov = write_instances(
        out / "coco", materials, dict(zip(SPLITS, det_count, strict=True)), det_size, seed
    )
    provenance.update(prov)
    say("pretraining set: the union of the train splits, unlabelled")
    pretrain = out / "pretrain" / "train"
    train_files = {
        "imagenet": sorted((out / "imagenet" / "train").rglob("*.png")),
        "ade": sorted((out / "ade" / "ADEChallengeData2016" / "images" / "training").glob("*.jpg")),
        "coco": sorted((out / "coco" / "train2017").glob("*.jpg")),
    }
    for name, files in train_files.items():
        (pretrain / name).mkdir(parents=True, exist_ok=True)
        for src in files:
            shutil.copyfile(src, pretrain / name / f"{src.parent.name}_{src.name}")
    counts["pretrain"] = {"train": sum(len(files) for files in train_files.values())}
    (out / "provenance.json").write_text(json.dumps(provenance, sort_keys=True))
    recipe = dict(args=args, counts=counts, packages=package_versions(), materials=list(MATERIALS), objects=OBJECTS)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return recipe
