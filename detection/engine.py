"""Importing this module registers the dense ViT backbone with mmdet (and the
shared hooks, optimizer constructors and checkpoint backend with mmengine)."""

from mmdet.registry import MODELS

import pretrain.engine  # noqa: F401
from pretrain.models.dense import DenseViT

MODELS.register_module(name="DenseViT", module=DenseViT)
