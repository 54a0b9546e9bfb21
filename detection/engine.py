"""Importing this module registers the dense ViT backbone and the checked COCO dataset
(:mod:`detection.datasets`) with mmdet (and the shared hooks, optimizer constructors
and checkpoint backend with mmengine)."""

from mmdet.registry import MODELS

import detection.datasets  # noqa: F401  (registers CheckedCocoDataset)
import pretrain.engine  # noqa: F401
from pretrain.models.dense import DenseViT

MODELS.register_module(name="DenseViT", module=DenseViT)
