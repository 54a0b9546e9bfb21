"""Checkpoint I/O that survives crashes and torch's ``weights_only`` loading."""

import os
import os.path as osp
import re
import secrets
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

ATOMIC_BACKEND = "atomic_local"
_PLAIN_BUFFER = "__history_buffer__"
# The partial file atomic_write leaves behind when its process is killed mid-write:
# ".<target name>.<pid>.<8 hex digits>.tmp" beside the target.
PARTIAL_FILE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def atomic_write(filepath: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``filepath``, flush it to disk and
    rename it over ``filepath``: readers see the old file or the whole new one."""
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


class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary file in the same folder, flushed to
    disk, then renamed over the target: a crash mid-write never leaves a
    truncated checkpoint under the final name. Select it with
    ``backend_args=dict(backend="atomic_local")``."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        atomic_write(filepath, obj.encode(encoding))


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


_OUTDATED = "outdated_ckpt_ids"  # message-hub key: steps whose files this save makes outdated


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with a crash-safe order of writes and removals.

    mmengine 0.10.7 removes the oldest checkpoint beyond ``max_keep_ckpts``
    *before* writing the new one, and writes ``last_checkpoint`` with a plain
    ``open()``: with ``max_keep_ckpts=1`` a kill during the save leaves no
    checkpoint at all, and a kill while ``last_checkpoint`` is written leaves it
    empty. Here the new checkpoint is written first, then ``last_checkpoint``
    (atomically), and only then is the outdated checkpoint removed. A kill
    between the two leaves one extra, older file; its step is recorded in the
    new checkpoint and the file is removed when a run resumes from it.

    File names, keep counts, ``keep_ckpt_ids`` across resumes, best checkpoints
    and publishing are mmengine's.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0 and is_main_process():
            # Outdated files of the resumed checkpoint that a kill kept from being removed.
            for step in runner.message_hub.get_info(_OUTDATED, []):
                if step not in self.keep_ckpt_ids:
                    self._remove_checkpoint(step)

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        outdated = []
        # The same step twice (a regular and a best-score save after one epoch) keeps one entry.
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        runner.message_hub.update_info(_OUTDATED, outdated)

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, "last_checkpoint"), self.last_ckpt.encode())
        for old_step in outdated:
            self._remove_checkpoint(old_step)

    def _remove_checkpoint(self, step: int) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed are folders
            self.file_backend.rmtree(path)
