"""Importing this module registers the dense ViT backbone, the linear decode head
(:mod:`segmentation.linear_head`) and the checked ADE20K dataset
(:mod:`segmentation.datasets`) with mmseg (and the shared hooks, optimizer constructors
and checkpoint backend with mmengine)."""

from mmseg.registry import MODELS

import pretrain.engine  # noqa: F401
import segmentation.datasets  # registers CheckedADE20KDataset
import segmentation.linear_head  # noqa: F401  (registers LinearHead)
from pretrain.models.dense import DenseViT

MODELS.register_module(name="DenseViT", module=DenseViT)
