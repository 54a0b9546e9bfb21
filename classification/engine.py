"""Importing this module registers the classification stage with mmengine
(and the shared hooks, optimizer constructors and checkpoint backend)."""

import pretrain.engine  # noqa: F401

from . import data, metrics, models, shard_data  # noqa: F401
