import json

import pytest
import torch

from conftest import run_tool


@pytest.mark.slow
def test_main_job_end_to_end_in_a_fast_configuration(tmp_path):
    """`make demo` runs tools/demo.py; here 4 pretraining epochs and the linear probe only."""
    result = run_tool(
        "tools/demo.py", "--out", str(tmp_path), "--tasks", "linprobe", "--pretrain-epochs", "4", timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"run directory: {tmp_path}" in result.stdout
    checkpoint = (tmp_path / "pretrain/sdae/seed0/last_checkpoint").read_text().strip()
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert any(k.startswith("sdae.teacher.") for k in state) and any(k.startswith("sdae.student.") for k in state)
    assert list(tmp_path.glob("pretrain/sdae/seed0/*/vis_data/scalars.json"))  # the training curves
    assert list(tmp_path.glob("suite/work/linprobe-*/*/vis_data/events.out.tfevents.*"))  # TensorBoard
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in results["records"]] == ["random-init", "mae", "sdae"]
    assert all(0 <= r["linprobe_top1"] <= 100 for r in results["records"])
    labels = {json.loads(p.read_text())["label"] for p in (tmp_path / "suite/results").glob("*.json")}
    assert labels == {
        "random init (no pretraining), seed 0",
        "MAE, seed 0",
        "SdAE (teacher: published 300 updates), seed 0",
    }
    report = (tmp_path / "report/report.md").read_text()
    assert "MAE, seed 0" in report and "random init" in report
    table = (tmp_path / "table.md").read_text()
    assert (tmp_path / "plot.png").stat().st_size > 0 and "gap to random init" in table
    assert "the same for every method: stretched to 4 epochs" in table
