"""Checkpoint I/O that survives crashes and torch's ``weights_only`` loading."""

import os
import secrets
from pathlib import Path

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

ATOMIC_BACKEND = "atomic_local"
_PLAIN_BUFFER = "__history_buffer__"


class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary file in the same folder, flushed to
    disk, then renamed over the target: a crash mid-write never leaves a
    truncated checkpoint under the final name. Select it with
    ``backend_args=dict(backend="atomic_local")``."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        self._atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        self._atomic_write(filepath, obj.encode(encoding))

    @staticmethod
    def _atomic_write(filepath: str | Path, data: bytes) -> None:
        folder, name = os.path.split(os.path.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # os.open with 0o666 honours the umask, unlike mkstemp's private 0o600 files.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Keeps Runner checkpoints loadable by ``torch.load(weights_only=True)``.

    torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
    (which does not pass the flag) stores its MessageHub's ``HistoryBuffer``
    objects - numpy arrays plus method references - and numpy scalars in
    every checkpoint, so
    resuming fails with ``UnpicklingError``. Rather than allow-listing those
    classes (which would include ``builtins.getattr``), this hook writes each
    buffer as plain tensors and rebuilds it after loading: checkpoints hold only
    tensors and builtin containers, and nothing is ever unpickled beyond them.
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint["message_hub"]["runtime_info"]
        for key, value in info.items():
            if isinstance(value, np.generic):  # e.g. the logger's "eta", a numpy float
                info[key] = value.item()
        scalars = checkpoint["message_hub"]["log_scalars"]
        for key, buffer in scalars.items():
            if isinstance(buffer, HistoryBuffer):
                history, counts = buffer.data
                scalars[key] = {
                    _PLAIN_BUFFER: True,
                    "log_history": torch.from_numpy(np.asarray(history, dtype=np.float64)),
                    "count_history": torch.from_numpy(np.asarray(counts, dtype=np.int64)),
                    "max_length": buffer.max_length,
                }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        scalars = checkpoint.get("message_hub", {}).get("log_scalars", {})
        for key, value in scalars.items():
            if isinstance(value, dict) and value.get(_PLAIN_BUFFER):
                scalars[key] = HistoryBuffer(
                    value["log_history"].tolist(), value["count_history"].tolist(), value["max_length"]
                )
