"""Labelled ImageNet-layout data with the MAE fine-tuning / linear-probing transforms."""

from pathlib import Path

from mmengine.registry import DATASETS
from timm.data import create_transform
from torch.utils.data import Dataset
from torchvision import transforms

from pretrain.data import load_rgb, scan_imagenet_split
from pretrain.data.folders import CLASS_SPLITS
from pretrain.data.sampler import sample_random_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = transforms.InterpolationMode.BICUBIC


def finetune_transform(img_size: int) -> transforms.Compose:
    """MAE fine-tuning: RandomResizedCrop + flip, RandAugment m9-mstd0.5, random erasing 0.25 (timm)."""
    return create_transform(
        input_size=img_size,
        is_training=True,
        color_jitter=None,
        auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def linprobe_transform(img_size: int) -> transforms.Compose:
    """MAE linear probing: RandomResizedCrop + flip only."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(img_size, interpolation=BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(img_size: int, crop_pct: float = 224 / 256) -> transforms.Compose:
    """Resize the short side to img_size / crop_pct (256 for 224), bicubic, then center-crop."""
    return transforms.Compose(
        [
            transforms.Resize(int(img_size / crop_pct), interpolation=BICUBIC),
            transforms.CenterCrop(img_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


TRANSFORMS = {"finetune": finetune_transform, "linprobe": linprobe_transform, "eval": eval_transform}


class SubsetFileError(ValueError):
    """A subset list that does not name images of the split it restricts."""


def read_subset_file(path: str | Path) -> list[str]:
    """The entries of a subset list: one image a line, blank lines skipped. An entry
    is a path relative to the split folder (``<class>/<image>``, as the lists the
    suite writes) or a bare file name (``n01440764_10026.JPEG``, the format of
    SimCLR's ``1percent.txt`` / ``10percent.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise SubsetFileError(f"subset file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def subset_indices(
    samples: list[tuple[Path, int]], split_dir: str | Path, entries: list[str], source: str
) -> list[int]:
    """Indices into ``samples`` (images under ``split_dir``) of the listed ``entries``,
    in sample order. Every entry must name exactly one image of the split, once: a
    missing, ambiguous or repeated entry is an error naming the first ones."""
    split_dir = Path(split_dir)
    # "<class>/<image>": that relative path; a bare name (SimCLR's lists): the images of that name
    by_relative = {path.relative_to(split_dir).as_posix(): [i] for i, (path, _) in enumerate(samples)}
    by_name: dict[str, list[int]] = {}
    for i, (path, _) in enumerate(samples):
        by_name.setdefault(path.name, []).append(i)
    chosen, missing, ambiguous, repeated = [], [], [], []
    seen = set()
    for entry in entries:
        found = (by_relative if "/" in entry else by_name).get(entry, [])
        if not found:
            missing.append(entry)
        elif len(found) > 1:
            ambiguous.append(entry)
        elif found[0] in seen:
            repeated.append(entry)
        else:
            seen.add(found[0])
            chosen.append(found[0])
    problems = [
        f"{len(names)} {what} (first: {', '.join(names[:5])})"
        for what, names in (
            (f"not found in {split_dir}", missing),
            ("bare names that match several images: give <class>/<image>", ambiguous),
            ("listed more than once", repeated),
        )
        if names
    ]
    if problems:
        raise SubsetFileError(
            f"{source} does not list images of {split_dir}: " + "; ".join(problems) + ". "
            "Each line must name one image of the split, as <class>/<image> or as its file name."
        )
    if not chosen:
        raise SubsetFileError(f"{source} lists no image")
    return sorted(chosen)


@DATASETS.register_module()
class ImageNetClassification(Dataset):
    """``data_root/split/<class>/<image>``; labels follow the sorted class names,
    one list for ``split`` and the ``class_splits`` present under ``data_root`` (a class
    folder missing from one of them, or empty, is an error naming it).
    ``transform`` is ``finetune``, ``linprobe`` or ``eval``. ``subset_file``: a list of
    images of the split (:func:`read_subset_file`; e.g. a low-shot 1 % list) that
    restricts it to exactly those images; labels stay those of the whole class list."""

    def __init__(
        self,
        data_root: str,
        split: str,
        transform: str,
        img_size: int = 224,
        class_splits: tuple[str, ...] = CLASS_SPLITS,
        subset_file: str | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
        self.samples, self.classes = scan_imagenet_split(data_root, split, class_splits)
        self.split_dir = Path(data_root) / split
        self.subset_file = subset_file
        if subset_file is not None:
            entries = read_subset_file(subset_file)
            self.samples = [self.samples[i] for i in subset_indices(self.samples, self.split_dir, entries, subset_file)]
        self.transform = TRANSFORMS[transform](img_size)
        self.metainfo = dict(classes=tuple(self.classes), split=split)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        # Augmentation from the sample's own seed when ResumableSampler gives one (exact resumes).
        with sample_random_state(index):
            inputs = self.transform(load_rgb(path))
        return dict(inputs=inputs, data_samples=label)
