import json

import pytest
import torch

from conftest import run_tool


@pytest.mark.slow
def test_main_job_end_to_end_in_a_fast_configuration(tmp_path):
    """`make demo` runs tools/demo.py; here 1 pretraining epoch and the linear probe only."""
    result = run_tool("tools/demo.py", "--out", str(tmp_path), "--epochs", "1", "--tasks", "linprobe", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"run directory: {tmp_path}" in result.stdout
    checkpoint = (tmp_path / "sdae_vit-tiny/last_checkpoint").read_text().strip()
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert any(k.startswith("sdae.teacher.") for k in state) and any(k.startswith("sdae.student.") for k in state)
    assert list(tmp_path.glob("sdae_vit-tiny/*/vis_data/events.out.tfevents.*"))
    labels = {json.loads(p.read_text())["label"] for p in (tmp_path / "suite/results").glob("*.json")}
    assert labels == {"SdAE", "MAE", "Random init"}
    report = (tmp_path / "report/report.md").read_text()
    assert "| SdAE | 1 |" in report and "| MAE | 1 |" in report and "| Random init | 0 |" in report
