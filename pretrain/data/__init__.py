"""Image-folder data: ImageNet layout scanning, the pretraining dataset (from the
folder or from webdataset shards), the synthetic-data generator and the dataset checker."""

from .folders import IMAGE_EXTENSIONS, ImageFolderError, list_images, scan_imagenet_split
from .pretrain_dataset import PretrainImageDataset, UnreadableImageError, load_rgb
from .shard_dataset import ShardedDataset, ShardedPretrainDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderError",
    "PretrainImageDataset",
    "ShardedDataset",
    "ShardedPretrainDataset",
    "UnreadableImageError",
    "list_images",
    "load_rgb",
    "scan_imagenet_split",
]
