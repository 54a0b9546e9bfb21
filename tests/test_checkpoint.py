import os

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer

from pretrain.engine.checkpoint import AtomicLocalBackend, WeightsOnlyCheckpointHook


def test_atomic_backend_replaces_whole_files(tmp_path):
    backend = get_file_backend(str(tmp_path / "x"), backend_args=dict(backend="atomic_local"))
    assert isinstance(backend, AtomicLocalBackend)
    target = tmp_path / "ckpt.pth"
    backend.put(b"first", str(target))
    backend.put(b"second version", str(target))
    assert target.read_bytes() == b"second version"
    backend.put_text("epoch_1.pth", str(tmp_path / "last_checkpoint"))
    assert (tmp_path / "last_checkpoint").read_text() == "epoch_1.pth"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth", "last_checkpoint"]


def test_crash_during_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "epoch_2.pth"
    target.write_bytes(b"good checkpoint")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        AtomicLocalBackend().put(b"half-written", str(target))
    assert target.read_bytes() == b"good checkpoint"
    assert os.listdir(tmp_path) == ["epoch_2.pth"]  # no temporary file left behind


def test_message_hub_round_trip_under_weights_only(tmp_path):
    buffer = HistoryBuffer([0.5, 0.25, 0.125], [1, 1, 2], max_length=100)
    checkpoint = {"message_hub": {"log_scalars": {"train/loss": buffer}, "runtime_info": {"eta": np.float64(3.5)}}}
    hook = WeightsOnlyCheckpointHook()
    hook.before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / "c.pth")
    loaded = torch.load(tmp_path / "c.pth", weights_only=True)  # torch's strict default
    hook.after_load_checkpoint(None, loaded)
    restored = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(restored, HistoryBuffer)
    assert restored.data[0].tolist() == [0.5, 0.25, 0.125]
    assert restored.data[1].tolist() == [1, 1, 2] and restored.max_length == 100
    assert restored.mean() == buffer.mean()
    assert loaded["message_hub"]["runtime_info"]["eta"] == 3.5
