"""tools/device_check.sh on the CPU (--device cpu --quick), as on the bare GPU
machine: mmcv, mmsegmentation and mmdetection cannot be imported."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

# Makes `import mmcv` (and mmseg, mmdet) fail in every process of the check, as there.
NO_MM_PACKAGES = 'import sys\nfor name in ("mmcv", "mmseg", "mmdet"):\n    sys.modules[name] = None\n'


def device_check(tmp_path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, dict]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_MM_PACKAGES)
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(site))
    out = tmp_path / "out"
    cmd = ["bash", "tools/device_check.sh", "--device", "cpu", "--quick", "--out", str(out), *args]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "device_check.json").read_text())
    return result, report


def test_gpu_tests_import_without_mm_packages_and_skip_themselves(tmp_path):
    result, report = device_check(tmp_path, "--parts", "gpu-tests")
    assert result.returncode == 0, result.stdout + result.stderr
    part = report["parts"]["gpu-tests"]
    assert part["status"] == "skipped: every test needs a CUDA GPU"
    assert part["results"]["tests"] == part["results"]["skipped"] > 0 and not part["results"]["failed"]
    assert report["environment"]["device"] == "cpu" and "no CUDA device" in report["note"]
    assert "gpu-tests" in result.stdout and "skipped" in result.stdout


@pytest.mark.slow
def test_every_part_runs_on_the_cpu(tmp_path):
    result, report = device_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    parts = report["parts"]
    assert list(parts) == ["gpu-tests", "benchmark", "train-resume", "data", "compiled-benchmark"]
    for name in ("benchmark", "compiled-benchmark"):
        assert parts[name]["status"] == "passed", parts[name]
        rows = {r["variant"]: r for r in parts[name]["results"]["results"]}
        assert set(rows) == {"mae", "fold:3"}
        for row in rows.values():
            assert row["img_s"] > 0 and row["mfu"] > 0 and row["tflops"] > 0
            assert set(row["sdpa_kernels"]) == {"flash_cpu"}  # fused attention, no math fallback
        assert parts[name]["results"]["meta"]["matmul_peak"]["tflops"] > 0
    assert parts["compiled-benchmark"]["results"]["meta"]["compile"] == "aot_eager"
    resume = parts["train-resume"]
    assert resume["status"] == "passed", resume
    # on the CPU the resumed run repeats the uninterrupted one exactly, through JPEG decoding
    # in the data preprocessor ("device" decoding, here on the CPU)
    assert resume["results"]["all_losses_equal"] and resume["results"]["resume_iteration"] == 4
    data = {r["decode"]: r for r in parts["data"]["results"]["results"]}
    assert parts["data"]["status"] == "passed" and set(data) == {"cpu", "device"}
    assert all(r["img_s"] > 0 for r in data.values())
    assert (tmp_path / "out" / "device_check.log").stat().st_size > 0
