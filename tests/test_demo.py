import pytest
import torch

from conftest import run_tool


@pytest.mark.slow
def test_main_job_leaves_checkpoint_and_tensorboard_logs(tmp_path):
    """`make demo` runs tools/demo.py; here with one epoch instead of ten."""
    result = run_tool("tools/demo.py", "--out", str(tmp_path), "--epochs", "1", timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    checkpoint = (tmp_path / "sdae_vit-tiny/last_checkpoint").read_text().strip()
    assert checkpoint.endswith("epoch_1.pth") and f"run directory: {tmp_path}" in result.stdout
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert any(k.startswith("sdae.teacher.") for k in state) and any(k.startswith("sdae.student.") for k in state)
    assert list(tmp_path.glob("sdae_vit-tiny/*/vis_data/events.out.tfevents.*"))
    assert len(list((tmp_path / "data/synthetic_imagenet/train").rglob("*.JPEG"))) == 320
