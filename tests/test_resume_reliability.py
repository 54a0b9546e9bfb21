"""Checkpoints and resume under kills, damaged work dirs, persistent workers,
mid-epoch checkpoints and a changed batch (issue 12)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from pretrain.data import PretrainImageDataset
from pretrain.engine import resume
from pretrain.engine.checkpoint import PARTIAL_FILE
from pretrain.engine.resume import NoIntactCheckpointError, checkpoint_damage, find_resume_checkpoint

from conftest import REPO, TINY_CONFIG, build_runner, run_tool, tiny_options

FINETUNE_CONFIG = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"


def train_losses(work_dir: Path) -> list[float]:
    """Per-iteration losses of every run in ``work_dir``, oldest run first."""
    losses = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        losses += [json.loads(line)["loss"] for line in scalars.read_text().splitlines() if "loss" in line]
    return losses


def assert_same_weights(a, b) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def stop_workers(*runners) -> None:
    """Ends the runners' persistent data-loading workers now. Left to the garbage
    collector, a Runner's reference cycles can free the loader's queues before
    its iterator, which then waits up to 5 s per worker before giving up on it."""
    for runner in runners:
        iterator = runner.train_dataloader._iterator
        if iterator is not None:
            iterator._shutdown_workers()


def cli_options(data_root: Path, **extra) -> list[str]:
    """tools/train.py --cfg-options for the tiny config on ``data_root``."""
    options = {
        "train_dataloader.dataset.data_root": data_root,
        "train_dataloader.batch_size": 16,
        "train_dataloader.num_workers": 0,
        "default_hooks.logger.interval": 1,
        **extra,
    }
    return ["--cfg-options", *(f"{key}={value}" for key, value in options.items())]


@HOOKS.register_module(force=True)
class StopAfterEpoch(Hook):
    """A preemption right after the checkpoint of epoch ``epoch``."""

    priority = "LOWEST"  # after the checkpoint hook

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise KeyboardInterrupt("simulated preemption")


@HOOKS.register_module(force=True)
class StopAfterIteration(Hook):
    """A preemption right after iteration ``iteration`` (1-based) and its checkpoint."""

    priority = "LOWEST"

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise KeyboardInterrupt("simulated preemption")


@HOOKS.register_module(force=True)
class RecordBatchIndices(Hook):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.seen.append((runner.epoch, batch_idx))


# 1. A kill while a checkpoint is written, with one checkpoint kept.


def wait_for_partial_checkpoint(work: Path, proc: subprocess.Popen, timeout: float = 300) -> str:
    """The name of the first partial file of a checkpoint after epoch_1 (a save in progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before a save was seen in progress")
        if work.is_dir():
            for entry in os.scandir(work):
                match = PARTIAL_FILE.match(entry.name)
                if match and match["target"].startswith("epoch_") and match["target"] != "epoch_1.pth":
                    return entry.name
        time.sleep(0.001)
    raise AssertionError("no checkpoint save seen in progress")


@pytest.mark.slow
def test_sigkill_during_a_save_with_max_keep_ckpts_1_keeps_the_previous_checkpoint(tmp_path, small_imagenet):
    work = tmp_path / "work"
    command = [sys.executable, "tools/train.py", str(TINY_CONFIG), "--work-dir", str(work)]
    options = cli_options(small_imagenet, **{"train_cfg.max_epochs": 4, "default_hooks.checkpoint.max_keep_ckpts": 1})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([*command, *options], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            partial = wait_for_partial_checkpoint(work, proc)
            proc.send_signal(signal.SIGKILL)  # while the new checkpoint is being written
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The previous checkpoint survived, and last_checkpoint names a complete one.
    named = work / Path((work / "last_checkpoint").read_text().strip()).name
    assert named.is_file() and checkpoint_damage(named) is None, (partial, sorted(os.listdir(work)))

    # The rerun removes the partial file, resumes from that checkpoint and ends with one checkpoint.
    rerun = run_tool(*command[1:], *options, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert f"resuming from {named}" in out
    assert not [name for name in os.listdir(work) if PARTIAL_FILE.match(name)]
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_4.pth"]


def test_outdated_checkpoints_are_removed_after_the_new_one_and_on_resume(tmp_path, small_imagenet):
    options = tiny_options(small_imagenet, **{"train_cfg.max_epochs": 3, "default_hooks.checkpoint.max_keep_ckpts": 2})
    build_runner(TINY_CONFIG, tmp_path, options).train()
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_3.pth"]
    ckpt = torch.load(tmp_path / "epoch_3.pth", weights_only=True)
    assert ckpt["message_hub"]["runtime_info"]["keep_ckpt_ids"] == [2, 3]
    assert ckpt["message_hub"]["runtime_info"]["outdated_ckpt_ids"] == [1]
    # A kill between the save of epoch 3 and the removal of epoch 1 leaves epoch_1.pth:
    # resuming from epoch 3 removes it.
    shutil.copy(tmp_path / "epoch_2.pth", tmp_path / "epoch_1.pth")
    options["train_cfg.max_epochs"] = 4
    build_runner(TINY_CONFIG, tmp_path, options).train()
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_3.pth", "epoch_4.pth"]


# 2. Damaged, moved and copied work dirs; partial files.


def fake_checkpoint(path: Path, epoch: int) -> Path:
    torch.save({"meta": {"epoch": epoch}, "state_dict": {"w": torch.full((256,), float(epoch))}}, path)
    return path


@pytest.fixture
def logged(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(resume, "_log", lambda message, level=None: messages.append(message))
    return messages


def work_dir_with(folder: Path, epochs: int, last: int | None = None) -> Path:
    folder.mkdir(parents=True)
    for epoch in range(1, epochs + 1):
        fake_checkpoint(folder / f"epoch_{epoch}.pth", epoch)
    (folder / "last_checkpoint").write_text(str(folder / f"epoch_{last or epochs}.pth"))
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_latest_checkpoint_falls_back_to_the_older_one(tmp_path, logged):
    work = work_dir_with(tmp_path / "work", 3)
    truncate(work / "epoch_3.pth")
    assert find_resume_checkpoint(work) == work / "epoch_2.pth"
    assert any("skipping checkpoint" in m and "epoch_3.pth" in m and "truncated" in m for m in logged)
    assert any(f"older checkpoint {work / 'epoch_2.pth'} instead of {work / 'epoch_3.pth'}" in m for m in logged)


def test_a_checkpoint_failing_its_crc_is_skipped(tmp_path, logged):
    work = work_dir_with(tmp_path / "work", 2)
    path = work / "epoch_2.pth"
    data = bytearray(path.read_bytes())
    data[data.index(torch.full((256,), 2.0).numpy().tobytes()) + 10] ^= 0xFF  # one bit-rotten byte of the tensor
    path.write_bytes(bytes(data))
    assert "CRC-32" in checkpoint_damage(path)
    assert find_resume_checkpoint(work) == work / "epoch_1.pth"


@pytest.mark.parametrize("pointer", ["", "/nowhere/epoch_9.pth"], ids=["empty", "dangling"])
def test_an_unusable_last_checkpoint_falls_back_to_the_newest_file(tmp_path, logged, pointer):
    work = work_dir_with(tmp_path / "work", 2)
    os.utime(work / "epoch_1.pth", (1, 1))  # the older file is older on disk too
    (work / "last_checkpoint").write_text(pointer)
    assert find_resume_checkpoint(work) == work / "epoch_2.pth"
    assert any("last_checkpoint" in m for m in logged)


def test_a_moved_work_dir_resumes_from_its_own_files(tmp_path, logged):
    old = work_dir_with(tmp_path / "old", 2)
    moved = tmp_path / "moved"
    old.rename(moved)  # last_checkpoint still names old/epoch_2.pth
    assert find_resume_checkpoint(moved) == moved / "epoch_2.pth"


def test_a_copied_work_dir_resumes_from_the_copy_not_the_original(tmp_path, logged):
    original = work_dir_with(tmp_path / "original", 2)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # its last_checkpoint names original/epoch_2.pth, which exists
    assert find_resume_checkpoint(copy) == copy / "epoch_2.pth"
    assert any("moved or copied" in m for m in logged)


def test_newer_files_of_an_earlier_run_are_not_resumed(tmp_path, logged):
    work = work_dir_with(tmp_path / "work", 3, last=1)  # restarted with --no-resume: epoch_2/3 are stale
    assert find_resume_checkpoint(work) == work / "epoch_1.pth"


def test_no_intact_checkpoint_is_an_error_naming_them(tmp_path, logged):
    work = work_dir_with(tmp_path / "work", 2)
    for name in ("epoch_1.pth", "epoch_2.pth"):
        truncate(work / name)
    with pytest.raises(NoIntactCheckpointError, match=r"epoch_2\.pth, epoch_1\.pth.*--no-resume"):
        find_resume_checkpoint(work)
    assert find_resume_checkpoint(tmp_path / "empty") is None


def test_partial_files_are_removed_and_nothing_else(tmp_path, logged):
    partial = [".epoch_2.pth.4242.0123abcd.tmp", ".last_checkpoint.17.deadbeef.tmp"]
    kept = ["epoch_1.pth", ".train.lock", "notes.tmp", ".epoch_2.pth.tmp"]
    for name in partial + kept:
        (tmp_path / name).write_bytes(b"x")
    removed = resume.remove_partial_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(partial)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


@pytest.mark.slow
def test_train_py_resumes_a_moved_work_dir_past_a_truncated_checkpoint(tmp_path, small_imagenet):
    first = tmp_path / "first"
    build_runner(TINY_CONFIG, first, tiny_options(small_imagenet, **{"train_cfg.max_epochs": 2})).train()
    work = tmp_path / "moved"
    first.rename(work)  # last_checkpoint names first/epoch_2.pth
    truncate(work / "epoch_2.pth")
    (work / ".epoch_3.pth.999.0123abcd.tmp").write_bytes(b"partial")
    result = run_tool(
        "tools/train.py",
        str(TINY_CONFIG),
        "--work-dir",
        str(work),
        *cli_options(small_imagenet, **{"train_cfg.max_epochs": 3}),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert f"skipping checkpoint {work / 'epoch_2.pth'}" in out
    assert f"resuming from the older checkpoint {work / 'epoch_1.pth'} instead of {work / 'epoch_2.pth'}" in out
    assert "resumed epoch: 1, iter: 3" in out
    assert not (work / ".epoch_3.pth.999.0123abcd.tmp").exists()
    assert torch.load(work / "epoch_3.pth", weights_only=True)["meta"]["iter"] == 9


# 3. Persistent data-loading workers.


def assert_persistent_worker_resume_is_exact(config: Path, options: dict, tmp_path: Path) -> None:
    options = dict(
        options,
        **{"train_cfg.max_epochs": 2, "train_dataloader.num_workers": 2, "train_dataloader.persistent_workers": True},
    )
    straight = build_runner(config, tmp_path / "straight", options)
    straight.train()
    interrupted = dict(options, custom_hooks=[*straight.cfg.custom_hooks, dict(type="StopAfterEpoch", epoch=1)])
    stopped = build_runner(config, tmp_path / "resumed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    resumed = build_runner(config, tmp_path / "resumed", options)
    resumed.train()
    stop_workers(straight, stopped, resumed)
    steps = len(straight.train_dataloader)
    assert train_losses(tmp_path / "straight")[steps:] == train_losses(tmp_path / "resumed")[-steps:]
    assert_same_weights(straight, resumed)

    # Each sample's augmentation depends on (seed, epoch, index) only: no workers, the same run.
    no_workers = {"train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False}
    build_runner(config, tmp_path / "in_process", dict(options, **no_workers)).train()
    assert train_losses(tmp_path / "in_process") == train_losses(tmp_path / "straight")


@pytest.mark.slow
def test_resume_with_persistent_workers_is_bit_exact(tmp_path, small_imagenet):
    assert_persistent_worker_resume_is_exact(TINY_CONFIG, tiny_options(small_imagenet), tmp_path)


@pytest.mark.slow
def test_finetune_resume_with_persistent_workers_is_bit_exact(tmp_path, small_imagenet):
    """RandAugment, random erasing and crops in the workers, Mixup/CutMix in the main process."""
    from suite.runner import prepare_backbone

    backbone = prepare_backbone("random:tiny", tmp_path / "backbone")
    options = tiny_options(
        small_imagenet,
        **{
            "val_dataloader.dataset.data_root": str(small_imagenet),
            "val_dataloader.num_workers": 0,
            "model.backbone.checkpoint": str(backbone),
        },
    )
    assert_persistent_worker_resume_is_exact(FINETUNE_CONFIG, options, tmp_path)


# 4. A resume after a checkpoint inside an epoch.


@pytest.mark.slow
def test_mid_epoch_resume_continues_with_the_next_batch_without_loading_the_trained_ones(
    tmp_path, small_imagenet, monkeypatch
):
    loaded = []
    getitem = PretrainImageDataset.__getitem__
    monkeypatch.setattr(PretrainImageDataset, "__getitem__", lambda self, i: loaded.append(int(i)) or getitem(self, i))
    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 2,
            "train_dataloader.batch_size": 8,  # 6 iterations per epoch
            "default_hooks.checkpoint.by_epoch": False,
            "default_hooks.checkpoint.interval": 4,
        },
    )
    hooks = [*Config.fromfile(TINY_CONFIG).custom_hooks, dict(type="RecordBatchIndices")]
    straight = build_runner(TINY_CONFIG, tmp_path / "straight", dict(options, custom_hooks=hooks))
    straight.train()
    interrupted = dict(options, custom_hooks=[*hooks, dict(type="StopAfterIteration", iteration=8)])
    with pytest.raises(KeyboardInterrupt):
        build_runner(TINY_CONFIG, tmp_path / "resumed", interrupted).train()
    assert (tmp_path / "resumed/last_checkpoint").read_text().strip().endswith("iter_8.pth")

    loaded.clear()
    resumed = build_runner(TINY_CONFIG, tmp_path / "resumed", dict(options, custom_hooks=hooks))
    resumed.train()
    record = next(h for h in resumed.hooks if isinstance(h, RecordBatchIndices))
    assert record.seen == [(1, 2), (1, 3), (1, 4), (1, 5)]  # epoch 2 continues at its third batch
    assert len(loaded) == 4 * 8  # the two trained batches were skipped, not loaded
    assert resumed.iter == straight.iter == 12
    assert train_losses(tmp_path / "straight")[8:] == train_losses(tmp_path / "resumed")[-4:]
    assert_same_weights(straight, resumed)


def test_mid_epoch_resume_with_a_sampler_that_cannot_skip_loads_and_drops(tmp_path, small_imagenet):
    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 2,
            "train_dataloader.batch_size": 8,
            "train_dataloader.sampler.type": "DefaultSampler",
            "default_hooks.checkpoint.by_epoch": False,
            "default_hooks.checkpoint.interval": 4,
        },
    )
    hooks = [*Config.fromfile(TINY_CONFIG).custom_hooks, dict(type="RecordBatchIndices")]
    interrupted = dict(options, custom_hooks=[*hooks, dict(type="StopAfterIteration", iteration=8)])
    with pytest.raises(KeyboardInterrupt):
        build_runner(TINY_CONFIG, tmp_path, interrupted).train()
    resumed = build_runner(TINY_CONFIG, tmp_path, dict(options, custom_hooks=hooks))
    resumed.train()
    record = next(h for h in resumed.hooks if isinstance(h, RecordBatchIndices))
    assert record.seen == [(1, 2), (1, 3), (1, 4), (1, 5)] and resumed.iter == 12
    logs = "".join(p.read_text() for p in tmp_path.glob("*/*.log"))
    assert "DefaultSampler / BatchSampler cannot skip them, so they are loaded and dropped" in logs


# 5. A resume with another effective batch.


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, small_imagenet) -> Path:
    """A work dir after one epoch of batch 16 (its checkpoint: epoch_1.pth)."""
    work = tmp_path_factory.mktemp("one_epoch")
    build_runner(TINY_CONFIG, work, tiny_options(small_imagenet, **{"train_cfg.max_epochs": 1})).train()
    return work


@pytest.mark.parametrize(
    "change,message",
    [
        ({"train_dataloader.batch_size": 8}, "this run has 8 images per optimizer step"),
        (
            {"train_dataloader.batch_size": 8, "optim_wrapper.accumulative_counts": 2},
            r"this run has 16 images per optimizer step \(1 process\(es\) x 8 x 2 accumulation\)",
        ),
    ],
    ids=["batch", "accumulation"],
)
def test_resume_with_another_effective_batch_is_refused(tmp_path, small_imagenet, one_epoch, change, message):
    meta = torch.load(one_epoch / "epoch_1.pth", weights_only=True)["meta"]
    assert meta["effective_batch"] == dict(images=16, world_size=1, batch_size=16, accumulation=1)
    work = tmp_path / "work"
    shutil.copytree(one_epoch, work)
    options = tiny_options(small_imagenet, **{"train_cfg.max_epochs": 2}, **change)
    runner = build_runner(TINY_CONFIG, work, options)
    with pytest.raises(ValueError, match=message) as refused:
        runner.train()
    text = str(refused.value)
    assert "trained with 16 images per optimizer step (1 process(es) x 16 x 1 accumulation)" in text
    assert "--no-resume" in text
    assert runner.iter == 3  # nothing trained after the resume


@pytest.mark.parametrize(
    "world_size,batch_size,accumulation,accepted",
    [(4, 192, 1, True), (8, 96, 1, True), (4, 96, 2, False), (4, 96, 1, False)],
)
def test_the_same_effective_batch_from_other_parts_is_accepted(
    monkeypatch, world_size, batch_size, accumulation, accepted
):
    from types import SimpleNamespace

    import pretrain.engine.hooks as hooks
    from pretrain.engine import EffectiveBatchHook

    monkeypatch.setattr(hooks, "get_world_size", lambda: world_size)
    cfg = Config(
        dict(train_dataloader=dict(batch_size=batch_size), optim_wrapper=dict(accumulative_counts=accumulation))
    )
    runner = SimpleNamespace(cfg=cfg, iter=100, work_dir="w", logger=None)
    hook = EffectiveBatchHook()
    saved = dict(images=768, world_size=8, batch_size=96, accumulation=1)  # the ViT-B recipe
    hook.after_load_checkpoint(runner, {"meta": {"effective_batch": saved}})
    if accepted:
        hook.before_train(runner)
    else:
        with pytest.raises(ValueError, match="trained with 768 images per optimizer step"):
            hook.before_train(runner)


# every config that trains (the frozen-feature protocols' configs, k-NN and low-shot, train nothing)
STAGE_CONFIGS = sorted(
    str(p.relative_to(REPO))
    for p in REPO.glob("*/configs/**/*.py")
    if "_base_" not in p.parts and "train_cfg" in Config.fromfile(p)
)


@pytest.mark.parametrize("path", STAGE_CONFIGS)
def test_every_config_trains_with_the_safe_checkpoint_and_resume_pieces(path):
    cfg = Config.fromfile(REPO / path)
    hooks = cfg.default_hooks
    assert hooks.checkpoint.type == "SafeCheckpointHook" and hooks.effective_batch.type == "EffectiveBatchHook"
    if cfg.train_cfg.get("max_epochs") is not None:  # epoch-based (segmentation counts iterations)
        assert cfg.train_cfg.type == "ResumableEpochBasedTrainLoop"
    if cfg.train_dataloader.dataset.type == "PretrainImageDataset":  # per-sample augmentation seeds
        assert cfg.train_dataloader.sampler.type == "ResumableSampler"
