"""Reading mmengine configs from several threads of one process (the studies' lanes)."""

import threading
from pathlib import Path

from mmengine.config import Config

_READING = threading.Lock()


def read_config(path: str | Path) -> Config:
    """``Config.fromfile`` under a process-wide lock. Resolving an ``mmdet::`` or
    ``mmseg::`` base asks pkg_resources whether the package is installed, and
    pkg_resources is not thread-safe: two lanes reading configs at once fail with
    "Expected str, Requirement, or Distribution"."""
    with _READING:
        return Config.fromfile(str(path))
