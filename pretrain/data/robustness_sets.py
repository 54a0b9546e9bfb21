"""Small robustness sets in the official layouts of ImageNet-A, -R, -Sketch, -V2
and -C, made from the validation split of an ImageNet-layout set (the real-image
mini suite's ``imagenet/val``: 8 materials), so that the robustness evaluator
runs its real code paths (layouts, class subsets, metrics) on a classifier the
mini suite fine-tuned. Only validation pixels are used.

Each class folder of the source is given a real ImageNet wnid, in sorted order,
from :data:`STAND_IN_WNIDS` (written to ``out/class_map.json``, the file the
evaluator's ``--class-map`` reads). For the mini suite's materials:

    brick  -> n04604644 worm fence    in neither 200-class subset
    cell   -> n01443537 goldfish      ImageNet-R only
    grass  -> n07714990 broccoli      ImageNet-A and ImageNet-R
    gravel -> n09246464 cliff         ImageNet-A only
    hubble -> n04399382 teddy bear    ImageNet-A only
    ihc    -> n02769748 backpack      ImageNet-R only
    moon   -> n09472597 volcano       ImageNet-A and ImageNet-R
    text   -> n06359193 web site      in neither

The choice is for coverage, not meaning: ImageNet-A and -R each get 4 classes,
so their subset masks (the published 200 classes a model has) are exercised.

Contents (the first ``per_class`` validation images of each class, in file order):

* ``imagenet-a/<wnid>/*.jpg``: the images as they are, for the classes in
  ImageNet-A's list (plus a README.txt, as in the release);
* ``imagenet-r/<wnid>/*.jpg``: renditions (posterised, inverted, cartoon-like
  with dark edges, in turn) for the classes in ImageNet-R's list;
* ``sketch/<wnid>/*.JPEG``: pencil-sketch-like edge drawings in grey;
* ``imagenetv2-matched-frequency-format-val/<class index>/*.jpeg``;
* ``imagenet-c/<corruption>/<severity 1..5>/<wnid>/*.JPEG``: the first
  ``c_per_class`` images under each of the 19 corruptions at 5 severities.
  The corruptions are simple numpy / PIL / scipy versions that approximate
  Hendrycks & Dietterich's (same names, same kind of damage growing with
  severity); they are not the published ImageNet-C pixels.
"""

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy import ndimage

from .folders import class_folders, list_images
from .real import existing_recipe

RECIPE_VERSION = 1
STAND_IN_WNIDS = (
    "n04604644",
    "n01443537",
    "n07714990",
    "n09246464",
    "n04399382",
    "n02769748",
    "n09472597",
    "n06359193",
)
SEVERITIES = (1, 2, 3, 4, 5)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------- corruptions
# x: float RGB in [0, 1], (H, W, 3); s: severity 1..5. Sizes scale with the image side
# (the published parameters are for 224 px).


def _scale(x: np.ndarray) -> float:
    return min(x.shape[:2]) / 224


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, (sigma, sigma, 0))


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (field - field.min()) / (np.ptp(field) + 1e-8)


def _hsv_adjust(x: np.ndarray, channel: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(x, 0, 1))
    hsv[..., channel] = np.clip(fn(hsv[..., channel]), 0, 1)
    return hsv2rgb(hsv)


def gaussian_noise(x, s, rng):
    return x + rng.normal(0, (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1], x.shape)


def shot_noise(x, s, rng):
    c = (60, 25, 12, 5, 3)[s - 1]
    return rng.poisson(np.clip(x, 0, 1) * c) / c


def impulse_noise(x, s, rng):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    hit = rng.random(x.shape) < amount
    return np.where(hit, rng.integers(0, 2, x.shape).astype(float), x)


def speckle_noise(x, s, rng):
    return x + x * rng.normal(0, (0.15, 0.2, 0.35, 0.45, 0.6)[s - 1], x.shape)


def gaussian_blur(x, s, rng):
    return _blur(x, (1, 2, 3, 4, 6)[s - 1] * _scale(x) + 0.3)


def defocus_blur(x, s, rng):
    radius = max((3, 4, 6, 8, 10)[s - 1] * _scale(x), 1.0)
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (xx**2 + yy**2 <= radius**2).astype(float)
    disk /= disk.sum()
    return np.stack([ndimage.convolve(x[..., c], disk, mode="reflect") for c in range(3)], axis=-1)


def glass_blur(x, s, rng):
    sigma, delta, rounds = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[s - 1]
    h, w = x.shape[:2]
    out = _blur(x, sigma)
    for _ in range(rounds):  # every pixel takes a neighbour's value (the frosted-glass shuffle)
        rows = np.clip(np.arange(h)[:, None] + rng.integers(-delta, delta + 1, (h, w)), 0, h - 1)
        cols = np.clip(np.arange(w)[None, :] + rng.integers(-delta, delta + 1, (h, w)), 0, w - 1)
        out = out[rows, cols]
    return _blur(out, sigma)


def motion_blur(x, s, rng):
    length = max((10, 15, 15, 15, 20)[s - 1] * _scale(x), 1.0)
    angle = rng.uniform(-np.pi / 4, np.pi / 4)
    steps = np.linspace(0, length, int(np.ceil(length)) + 1)
    shifted = [ndimage.shift(x, (t * np.sin(angle), t * np.cos(angle), 0), order=1, mode="nearest") for t in steps]
    return np.mean(shifted, 0)


def zoom_blur(x, s, rng):
    h, w = x.shape[:2]
    frames = [x]
    for z in np.linspace(1, (1.11, 1.16, 1.21, 1.26, 1.31)[s - 1], 6)[1:]:
        zoomed = ndimage.zoom(x, (z, z, 1), order=1)
        top, left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
        frames.append(zoomed[top : top + h, left : left + w])
    return np.mean(frames, 0)


def snow(x, s, rng):
    density, blend = ((0.01, 0.9), (0.02, 0.8), (0.03, 0.75), (0.045, 0.7), (0.06, 0.65))[s - 1]
    flakes = (rng.random(x.shape[:2]) < density).astype(float)
    flakes = motion_blur(np.repeat(flakes[..., None], 3, -1), 2, rng)[..., 0] * 1.5
    grey = x.mean(-1, keepdims=True)
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return x + flakes[..., None]


def frost(x, s, rng):
    a, b = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[s - 1]
    ice = _smooth_noise(x.shape[:2], 1.5 * _scale(x) + 0.5, rng)[..., None] * np.array([0.85, 0.9, 1.0])
    return a * x + b * ice


def fog(x, s, rng):
    c = (1.5, 2.0, 2.5, 2.5, 3.0)[s - 1]
    h, w = x.shape[:2]
    haze = sum(_smooth_noise((h, w), h / 2**k, rng) / 2**k for k in range(1, 5))
    peak = x.max()
    return (x + c * 0.3 * haze[..., None]) * peak / (peak + c * 0.3)


def brightness(x, s, rng):
    return _hsv_adjust(x, 2, lambda v: v + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1])


def contrast(x, s, rng):
    mean = x.mean((0, 1), keepdims=True)
    return (x - mean) * (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1] + mean


def saturate(x, s, rng):
    gain, shift = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[s - 1]
    return _hsv_adjust(x, 1, lambda v: v * gain + shift)


def elastic_transform(x, s, rng):
    h, w = x.shape[:2]
    amplitude = (0.01, 0.02, 0.03, 0.04, 0.05)[s - 1] * min(h, w)
    dy, dx = ((_smooth_noise((h, w), 0.03 * min(h, w) + 1, rng) - 0.5) * 2 * amplitude for _ in range(2))
    rows, cols = np.mgrid[:h, :w]
    coords = [rows + dy, cols + dx]
    return np.stack([ndimage.map_coordinates(x[..., c], coords, order=1, mode="reflect") for c in range(3)], -1)


def pixelate(x, s, rng):
    img = Image.fromarray(_to_uint8(x))
    small = (max(1, int(img.width * (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1])),) * 2
    return np.asarray(img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)) / 255


def jpeg_compression(x, s, rng):
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buffer, "JPEG", quality=(25, 18, 15, 10, 7)[s - 1])
    return np.asarray(Image.open(buffer).convert("RGB")) / 255


def spatter(x, s, rng):
    coverage = (0.05, 0.1, 0.15, 0.2, 0.3)[s - 1]
    liquid = _smooth_noise(x.shape[:2], 2 * _scale(x) + 1, rng)
    mask = (liquid > np.quantile(liquid, 1 - coverage)).astype(float)
    mask = ndimage.gaussian_filter(mask, 0.7)[..., None]
    mud = np.array([0.35, 0.25, 0.15])
    return x * (1 - mask) + mud * mask


CORRUPTIONS: dict[str, Corruption] = {
    fn.__name__: fn
    for fn in (
        gaussian_noise,
        shot_noise,
        impulse_noise,
        defocus_blur,
        glass_blur,
        motion_blur,
        zoom_blur,
        snow,
        frost,
        fog,
        brightness,
        contrast,
        elastic_transform,
        pixelate,
        jpeg_compression,
        speckle_noise,
        gaussian_blur,
        spatter,
        saturate,
    )
}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def corrupt(img: Image.Image, corruption: str, severity: int, rng: np.random.Generator) -> Image.Image:
    """``img`` under one of :data:`CORRUPTIONS` at ``severity`` 1..5."""
    x = np.asarray(img.convert("RGB"), dtype=np.float64) / 255
    return Image.fromarray(_to_uint8(CORRUPTIONS[corruption](x, severity, rng)))


# --------------------------------------------------------------------------- renditions


def rendition(img: Image.Image, index: int) -> Image.Image:
    """An ImageNet-R-like rendition: posterised, inverted or cartoon-like, in turn."""
    img = img.convert("RGB")
    style = index % 3
    if style == 0:
        return ImageOps.posterize(img, 2)
    if style == 1:
        return ImageOps.invert(img)
    edges = img.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
    flat = ImageOps.posterize(img.filter(ImageFilter.MedianFilter(3)), 3)
    return Image.composite(Image.new("RGB", img.size), flat, edges)


def sketch(img: Image.Image) -> Image.Image:
    """An ImageNet-Sketch-like drawing: dark strokes on white, in grey."""
    grey = img.convert("L").filter(ImageFilter.SMOOTH)
    strokes = ImageOps.invert(ImageOps.autocontrast(grey.filter(ImageFilter.FIND_EDGES)))
    return strokes.convert("RGB")


# --------------------------------------------------------------------------- writer


def write_robustness_sets(
    out: str | Path,
    imagenet: str | Path,
    imagenet_wnids: Sequence[str],
    subsets: dict[str, Sequence[str]],
    corruptions: Sequence[str],
    seed: int = 0,
    per_class: int = 5,
    c_per_class: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the five sets under ``out`` from ``imagenet/val`` (see the module
    docstring). ``imagenet_wnids``: the 1000 wnids in class-index order (V2's
    folder names); ``subsets``: ImageNet-A's and -R's published wnids
    (``{"imagenet_a": [...], "imagenet_r": [...]}``); ``corruptions``: the
    ImageNet-C folders to write. These lists are the evaluator's, passed in (the
    core imports no stage). Returns the recipe; a folder with the same recipe is
    left as is."""
    out, val = Path(out), Path(imagenet) / "val"
    if not val.is_dir():
        raise FileNotFoundError(f"{val} does not exist; give the ImageNet-layout folder holding val/<class>/")
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"no generator for corruption(s) {unknown}; known: {', '.join(CORRUPTIONS)}")
    classes = class_folders(val)
    if not classes or len(classes) > len(STAND_IN_WNIDS):
        raise ValueError(f"{val} has {len(classes)} class folders; the mini sets map 1..{len(STAND_IN_WNIDS)}")
    images = {name: list_images(val / name) for name in classes}
    short = {name: len(files) for name, files in images.items() if len(files) < max(per_class, c_per_class)}
    if short:
        raise ValueError(f"too few validation images for {max(per_class, c_per_class)} per class: {short}")
    class_map = dict(zip(classes, STAND_IN_WNIDS, strict=False))
    args = dict(
        recipe_version=RECIPE_VERSION,
        seed=seed,
        per_class=per_class,
        c_per_class=c_per_class,
        source=str(Path(imagenet).resolve()),
        class_map=class_map,
        corruptions=list(corruptions),
    )
    existing = existing_recipe(out, args)
    if existing is not None:
        return existing
    say = progress or (lambda message: None)
    index_of = {w: i for i, w in enumerate(imagenet_wnids)}
    counts: dict[str, int] = {}

    def save(img: Image.Image, path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(path, "JPEG", quality=95)
        counts[key] = counts.get(key, 0) + 1

    def first(name: str, n: int) -> list[tuple[int, Path, Image.Image]]:
        return [(i, path, Image.open(path).convert("RGB")) for i, path in enumerate(images[name][:n])]

    say("imagenet-a, imagenet-r, sketch, imagenetv2: the first validation images of each class")
    for name, wnid in class_map.items():
        for i, path, img in first(name, per_class):
            if wnid in subsets["imagenet_a"]:
                save(img, out / "imagenet-a" / wnid / f"{path.stem}.jpg", "imagenet-a")
            if wnid in subsets["imagenet_r"]:
                save(rendition(img, i), out / "imagenet-r" / wnid / f"{path.stem}.jpg", "imagenet-r")
            save(sketch(img), out / "sketch" / wnid / f"{path.stem}.JPEG", "sketch")
            v2 = out / "imagenetv2-matched-frequency-format-val" / str(index_of[wnid]) / f"{path.stem}.jpeg"
            save(img, v2, "imagenetv2-matched-frequency-format-val")
    for folder, title in (("imagenet-a", "ImageNet-A"), ("imagenet-r", "ImageNet-R")):
        wnids = sorted(w for w in class_map.values() if w in subsets[folder.replace("-", "_")])
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / "README.txt").write_text(f"mini {title}: {len(wnids)} classes\n" + "\n".join(wnids) + "\n")
    say(f"imagenet-c: {len(corruptions)} corruptions x {len(SEVERITIES)} severities")
    for c_index, corruption in enumerate(corruptions):
        for severity in SEVERITIES:
            for k, (name, wnid) in enumerate(class_map.items()):
                for i, path, img in first(name, c_per_class):
                    rng = np.random.default_rng([seed, c_index, severity, k, i])
                    target = out / "imagenet-c" / corruption / str(severity) / wnid / f"{path.stem}.JPEG"
                    save(corrupt(img, corruption, severity, rng), target, "imagenet-c")
    (out / "class_map.json").write_text(json.dumps(class_map, indent=2) + "\n")
    recipe = dict(args=args, counts=counts)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return recipe
