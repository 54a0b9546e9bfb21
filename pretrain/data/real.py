"""Small real-image datasets for the small-scale reproduction, built offline from
images that ship inside scikit-learn and scikit-image (through their own
loaders: nothing is downloaded), in the project's ImageNet layout,
deterministically from a seed.

Recipe (``write_real_datasets``; every image is ``size`` x ``size`` RGB PNG):

* ``digits/{train,val}/<0-9>/`` - scikit-learn's handwritten digits (1,797 8x8
  images, grey levels 0-16), scaled to 0-255 and resized bicubically; a
  stratified 80/20 split.
* ``textures/{train,val}/<brick|grass|gravel>/`` - square patches (side drawn
  uniformly from 32-128 px) of scikit-image's three 512x512 texture photographs.
  Train patches come from the left half of each photograph, validation patches
  from the right half, so no pixel is shared between the splits.
* ``faces/{train,val}/<face|nonface>/`` - scikit-image's LFW subset (100 faces,
  100 non-faces, 25x25); a stratified 70/30 split.
* ``pretrain/train/<source>/`` - unlabeled: ``photo_crops`` random square crops
  (side 48 px to half the short side) of scikit-image's bundled photographs
  (:data:`PHOTOS`; never the texture photographs), plus copies of the three
  labelled *train* splits (as ImageNet pretraining sees ImageNet's train
  split). No validation image is in it.

``recipe.json`` at the root records the arguments, the counts and the package
versions; :func:`write_real_datasets` refuses to mix recipes in one folder.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# scikit-image photographs bundled in its wheel (scikit-image 0.26).
PHOTOS = (
    "astronaut",
    "camera",
    "cat",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
TEXTURES = ("brick", "grass", "gravel")
RECIPE_VERSION = 1


def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)())


def _to_rgb(pixels: np.ndarray, size: int) -> Image.Image:
    """uint8 grey or RGB(A) array -> ``size`` x ``size`` RGB image (bicubic)."""
    img = Image.fromarray(pixels)
    img = img.convert("RGB")
    return img.resize((size, size), Image.Resampling.BICUBIC)


def _random_square(rng: np.random.Generator, height: int, x_range: tuple[int, int], side_range: tuple[int, int]):
    """(top, left, side) of a square inside rows [0, height) and columns [x_range)."""
    max_side = min(side_range[1], height, x_range[1] - x_range[0])
    side = int(rng.integers(side_range[0], max_side + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(x_range[0], x_range[1] - side + 1))
    return top, left, side


def _stratified_split(labels: np.ndarray, train_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean train mask with ``train_fraction`` of every class (rounded)."""
    train = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train[members[: round(train_fraction * len(members))]] = True
    return train


def _write(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _labelled_set(
    out: Path, name: str, images: list[Image.Image], labels: list[str], train: np.ndarray
) -> dict[str, int]:
    counts = {"train": 0, "val": 0}
    for i, (img, label, is_train) in enumerate(zip(images, labels, train, strict=True)):
        split = "train" if is_train else "val"
        _write(img, out / name / split / label / f"{name}_{i:05d}.png")
        if is_train:
            _write(img, out / "pretrain" / "train" / name / f"{name}_{i:05d}.png")
        counts[split] += 1
    return counts


def digits_images(size: int) -> tuple[list[Image.Image], list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return [_to_rgb(p, size) for p in pixels], [str(t) for t in digits.target]


def texture_patches(
    size: int, per_class: int, rng: np.random.Generator, half: str
) -> tuple[list[Image.Image], list[str]]:
    images, labels = [], []
    for texture in TEXTURES:
        pixels = _skimage_image(texture)
        height, width = pixels.shape[:2]
        columns = (0, width // 2) if half == "left" else (width // 2, width)
        for _ in range(per_class):
            top, left, side = _random_square(rng, height, columns, (32, 128))
            images.append(_to_rgb(pixels[top : top + side, left : left + side], size))
            labels.append(texture)
    return images, labels


def face_images(size: int) -> tuple[list[Image.Image], list[str]]:
    pixels = _skimage_image("lfw_subset")
    if pixels.dtype != np.uint8:  # float in [0, 1] in some scikit-image versions
        pixels = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    if len(pixels) != 200:
        raise RuntimeError(f"scikit-image's lfw_subset has {len(pixels)} images; this recipe expects 100 + 100")
    return [_to_rgb(p, size) for p in pixels], ["face"] * 100 + ["nonface"] * 100


def photo_crops(size: int, count: int, rng: np.random.Generator) -> list[tuple[str, Image.Image]]:
    photos = {name: _skimage_image(name) for name in PHOTOS}
    crops = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        pixels = photos[name]
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = pixels[..., :3]
        height, width = pixels.shape[:2]
        top, left, side = _random_square(rng, height, (0, width), (48, min(height, width) // 2))
        crops.append((name, _to_rgb(pixels[top : top + side, left : left + side], size)))
    return crops


def package_versions() -> dict[str, str]:
    import skimage
    import sklearn

    return {"scikit-learn": sklearn.__version__, "scikit-image": skimage.__version__}


def existing_recipe(out: Path, args: dict) -> dict | None:
    """The recipe already in ``out`` if it was built with ``args``; ``None`` for a new
    or empty folder; an error for another recipe or a non-empty folder without one."""
    recipe_file = out / "recipe.json"
    if recipe_file.exists():
        existing = json.loads(recipe_file.read_text())
        if existing.get("args") != args:
            raise FileExistsError(
                f"{out} holds datasets built with {existing.get('args')}, not {args}; "
                "delete the folder or choose another output folder"
            )
        return existing
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and has no recipe.json; choose an empty or new folder")
    return None


def write_real_datasets(
    out: str | Path,
    seed: int = 0,
    size: int = 32,
    photo_crops_count: int = 2000,
    texture_train_per_class: int = 300,
    texture_val_per_class: int = 100,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the four datasets under ``out`` (see the module docstring); returns
    the recipe (arguments, counts, package versions). If ``out`` already holds
    the same recipe it is left as is; a different recipe is an error."""
    out = Path(out)
    args = dict(
        recipe_version=RECIPE_VERSION,
        seed=seed,
        size=size,
        photo_crops=photo_crops_count,
        texture_train_per_class=texture_train_per_class,
        texture_val_per_class=texture_val_per_class,
    )
    existing = existing_recipe(out, args)
    if existing is not None:
        return existing
    say = progress or (lambda message: None)
    counts = {}
    rng = np.random.default_rng([seed, 0])
    say("digits (scikit-learn)")
    images, labels = digits_images(size)
    counts["digits"] = _labelled_set(out, "digits", images, labels, _stratified_split(np.array(labels), 0.8, rng))

    say("texture patches (scikit-image brick, grass, gravel)")
    rng = np.random.default_rng([seed, 1])
    train_images, train_labels = texture_patches(size, texture_train_per_class, rng, "left")
    val_images, val_labels = texture_patches(size, texture_val_per_class, rng, "right")
    train = np.array([True] * len(train_images) + [False] * len(val_images))
    counts["textures"] = _labelled_set(out, "textures", train_images + val_images, train_labels + val_labels, train)

    say("faces vs non-faces (scikit-image LFW subset)")
    rng = np.random.default_rng([seed, 2])
    images, labels = face_images(size)
    counts["faces"] = _labelled_set(out, "faces", images, labels, _stratified_split(np.array(labels), 0.7, rng))

    say(f"{photo_crops_count} crops of {len(PHOTOS)} scikit-image photographs")
    rng = np.random.default_rng([seed, 3])
    for i, (name, img) in enumerate(photo_crops(size, photo_crops_count, rng)):
        _write(img, out / "pretrain" / "train" / "photos" / f"{name}_{i:05d}.png")
    counts["pretrain"] = {
        "train": photo_crops_count + sum(counts[name]["train"] for name in ("digits", "textures", "faces"))
    }
    recipe = dict(args=args, counts=counts, packages=package_versions())
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return recipe


def write_photo_jpegs(
    out: str | Path,
    count: int,
    seed: int = 0,
    short_side: tuple[int, int] = (300, 500),
    quality: int = 90,
    workers: int = 1,
) -> list[Path]:
    """``count`` JPEGs the size of typical ImageNet training images (short side
    drawn from ``short_side``, aspect ratio 3:4 to 4:3 in either orientation),
    cut from scikit-image's bundled photographs and saved at ``quality``: data
    for measuring decoding throughput, in a plain folder (``subdir=''``).
    Deterministic in ``seed``; ``workers`` processes write in parallel."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, i, seed, short_side, quality) for i in range(count)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:
            return pool.starmap(_write_photo_jpeg, jobs, chunksize=16)
    return [_write_photo_jpeg(*job) for job in jobs]


def _write_photo_jpeg(out: Path, index: int, seed: int, short_side: tuple[int, int], quality: int) -> Path:
    rng = np.random.default_rng([seed, index])
    name = PHOTOS[index % len(PHOTOS)]
    pixels = _skimage_image(name)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    short = int(rng.integers(short_side[0], short_side[1] + 1))
    long_side = int(short * rng.uniform(1.0, 4 / 3))
    size = (long_side, short) if rng.random() < 0.5 else (short, long_side)  # (width, height)
    height, width = pixels.shape[:2]
    scale = rng.uniform(0.5, 1.0)  # a random window with the target aspect, then resized
    win_w = max(8, int(min(width, height * size[0] / size[1]) * scale))
    win_h = max(8, int(win_w * size[1] / size[0]))
    top, left = int(rng.integers(0, height - win_h + 1)), int(rng.integers(0, width - win_w + 1))
    img = Image.fromarray(pixels[top : top + win_h, left : left + win_w]).convert("RGB")
    path = out / f"{name}_{index:06d}.JPEG"
    img.resize(size, Image.Resampling.BICUBIC).save(path, format="JPEG", quality=quality)
    return path
