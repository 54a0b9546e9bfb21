"""Labelled ImageNet-layout data with the MAE fine-tuning / linear-probing transforms."""

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


@DATASETS.register_module()
class ImageNetClassification(Dataset):
    """``data_root/split/<class>/<image>``; labels follow the sorted class names,
    one list for ``split`` and the ``class_splits`` present under ``data_root`` (a class
    folder missing from one of them, or empty, is an error naming it).
    ``transform`` is ``finetune``, ``linprobe`` or ``eval``."""

    def __init__(
        self,
        data_root: str,
        split: str,
        transform: str,
        img_size: int = 224,
        class_splits: tuple[str, ...] = CLASS_SPLITS,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
        self.samples, self.classes = scan_imagenet_split(data_root, split, class_splits)
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
