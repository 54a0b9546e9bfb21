"""Issue #12, the run-level promises: a result is recorded only if it evaluates
the end of training; a rerun after an interrupted final validation validates;
one trainer per work dir; a killed suite takes its trainer with it; config
mistakes, mismatched checkpoints and too-small datasets are refused up front."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain.engine.runtime import prepare_config
from suite.runner import final_result, prepare_backbone

from conftest import REPO, TINY_CONFIG, run_tool

FINETUNE = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"


@pytest.fixture(scope="module")
def random_backbone(tmp_path_factory) -> Path:
    return prepare_backbone("random:tiny", tmp_path_factory.mktemp("backbone"))


def finetune_args(work_dir: Path, data: Path, backbone: Path, *options: str) -> list[str]:
    return [
        str(REPO / "tools/train.py"), str(FINETUNE), "--backbone", str(backbone), "--work-dir", str(work_dir),
        "--cfg-options", f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
        "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "train_dataloader.batch_size=16",
        *options,
    ]  # fmt: skip


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def lock_holder_pid(lock: Path) -> int | None:
    match = re.search(r"pid (\d+)", lock.read_text()) if lock.exists() else None
    return int(match.group(1)) if match else None


@pytest.mark.slow
def test_rerun_after_interrupted_final_validation_validates(tmp_path, small_imagenet, random_backbone):
    args = finetune_args(
        tmp_path, small_imagenet, random_backbone, "train_cfg.max_epochs=2", "train_cfg.val_interval=1"
    )
    first = run_tool(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    path = tmp_path / "result.json"
    final = json.loads(path.read_text())
    assert final["iter"] == final["max_iters"] == 6 and final["epoch"] == 2
    assert final_result(tmp_path)["metrics"] == final["metrics"]
    # The state a kill during the last validation leaves: the last checkpoint is
    # saved (before validation), result.json still holds epoch 1's evaluation.
    path.write_text(json.dumps({**final, "epoch": 1, "iter": 3, "metrics": {"top1": -1.0}}))
    with pytest.raises(RuntimeError, match="evaluates iteration 3 of 6"):
        final_result(tmp_path)
    rerun = run_tool(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "validating now" in rerun.stdout + rerun.stderr
    again = final_result(tmp_path)
    assert again["iter"] == 6 and again["metrics"] == final["metrics"]
    # A fresh start moves the old record aside before its first step, so that a
    # kill before its own first evaluation cannot leave the old one as its result.
    fresh = run_tool(*args[:-2], "train_cfg.max_epochs=1", "train_cfg.val_interval=1", "--no-resume")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads((tmp_path / "result.previous.json").read_text())["iter"] == 6
    assert final_result(tmp_path)["max_iters"] == 3


@pytest.mark.slow
def test_training_set_smaller_than_one_batch_is_refused(tmp_path, small_imagenet, random_backbone):
    # 48 images, batch 64, drop_last (Mixup pairs images within a batch): no step would run
    result = run_tool(*finetune_args(tmp_path, small_imagenet, random_backbone, "train_dataloader.batch_size=64"))
    assert result.returncode != 0
    assert "fewer than one batch of 64" in result.stderr and str(small_imagenet) in result.stderr


@pytest.mark.slow
def test_test_tool_refuses_a_checkpoint_of_another_model(tmp_path, small_imagenet, random_backbone):
    from pretrain.models import SdAE

    sdae = SdAE(arch="tiny", img_size=96, decoder=dict(embed_dim=32, depth=1, num_heads=2))
    pretraining = tmp_path / "epoch_1.pth"
    torch.save(
        {"meta": {"epoch": 1}, "state_dict": {f"sdae.{k}": v for k, v in sdae.state_dict().items()}}, pretraining
    )
    result = run_tool(
        str(REPO / "tools/test.py"), str(FINETUNE), str(pretraining), "--backbone", str(random_backbone),
        "--work-dir", str(tmp_path / "test"), "--cfg-options",
        f"test_dataloader.dataset.data_root={small_imagenet}", "test_dataloader.num_workers=0",
    )  # fmt: skip
    assert result.returncode != 0
    assert "does not fit this config's model" in result.stderr and "keys missing" in result.stderr
    assert not (tmp_path / "test/result.json").exists()


@pytest.mark.slow
def test_one_trainer_per_work_dir_and_a_killed_suite_takes_its_trainer(tmp_path, synthetic_imagenet):
    out = tmp_path / "suite"
    suite = subprocess.Popen(
        [sys.executable, str(REPO / "tools/run_suite.py"), "--checkpoint", "random:tiny", "--tasks", "finetune",
         "--data", f"imagenet={synthetic_imagenet}", "--out", str(out), "--amp", "none"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: any(lock_holder_pid(p) for p in out.glob("work/*/.train.lock")), 120, "the trainer's lock")
        (lock,) = out.glob("work/*/.train.lock")
        trainer = lock_holder_pid(lock)
        work_dir = lock.parent
        # A second trainer in the same work dir is refused at once, naming the holder.
        second = run_tool(
            str(REPO / "tools/train.py"), str(FINETUNE),
            "--work-dir", str(work_dir), "--amp", "none", timeout=120,
        )  # fmt: skip
        assert second.returncode != 0 and f"pid {trainer}" in second.stderr and "is in use by" in second.stderr
        # SIGKILL leaves the suite no chance to clean up: the kernel stops the trainer.
        suite.send_signal(signal.SIGKILL)
        suite.wait(timeout=30)
        wait_for(lambda: not alive(trainer), 60, f"trainer {trainer} to stop after its suite was killed")
    finally:
        if suite.poll() is None:
            suite.kill()


def test_top_level_variable_in_cfg_options_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"variable of the config file.*did you mean train_cfg\.max_epochs"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"max_epochs": 1})
    with pytest.raises(ValueError, match=r"no key of the config.*did you mean train_cfg\.max_epochs"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"max_epoch": 1})


def test_cfg_option_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"train_dataloader\.batch_size='abc'.*expected an integer"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"train_dataloader.batch_size": "abc"})
    cfg, _ = prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"train_dataloader.batch_size": 8})
    assert cfg.train_dataloader.batch_size == 8


def test_hook_option_typo_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="CheckpointHook has no option 'max_keep_ckpt'; did you mean 'max_keep_ckpts'"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"default_hooks.checkpoint.max_keep_ckpt": 1})
    with pytest.raises(ValueError, match=r"custom_hooks\[0\]: TeacherEMAHook has no option 'momentun'"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"custom_hooks.0.momentun": 0.9})


def test_explicit_lr_wins_over_lr_scaling(tmp_path):
    cfg, line = prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"optim_wrapper.optimizer.lr": 1e-3})
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and "as given in --cfg-options" in line
    cfg, line = prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"lr_scaling.base_lr": 8e-3})
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(8e-3 * 32 / 256)
