"""Pretraining through the real mmengine Runner on generated data."""

import json

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from pretrain.engine import NonFiniteLossError, SdAEPretrainer

from conftest import MAE_TINY_CONFIG, REPO, TINY_CONFIG, build_runner, run_tool, tiny_options


def train_losses(work_dir) -> list[float]:
    """Per-iteration losses of every run in ``work_dir``, oldest run first."""
    losses = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        losses += [json.loads(line)["loss"] for line in scalars.read_text().splitlines() if "loss" in line]
    return losses


@pytest.mark.slow
def test_short_pretraining_learns_and_checkpoints_everything(tmp_path, synthetic_imagenet):
    options = tiny_options(synthetic_imagenet, **{"train_cfg.max_epochs": 4, "train_dataloader.batch_size": 32})
    runner = build_runner(TINY_CONFIG, tmp_path, options)
    teacher0 = {k: v.clone() for k, v in runner.model.sdae.teacher.state_dict().items()}
    runner.train()
    losses = train_losses(tmp_path)
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.1
    # Full state: student, decoder, teacher, optimizer, schedulers; loadable with torch's
    # strict weights_only default.
    ckpt = torch.load(tmp_path / "epoch_4.pth", weights_only=True)
    keys = ckpt["state_dict"].keys()
    for part in ("sdae.student.blocks.0.attn.qkv.weight", "sdae.decoder.mask_token", "sdae.teacher.norm.weight"):
        assert part in keys
    assert ckpt["optimizer"]["state"] and len(ckpt["param_schedulers"]) == 2
    assert ckpt["meta"]["epoch"] == 4
    teacher = runner.model.sdae.teacher.state_dict()
    assert any(not torch.equal(teacher[k], teacher0[k]) for k in teacher0)


def test_mae_baseline_trains(tmp_path, small_imagenet):
    runner = build_runner(MAE_TINY_CONFIG, tmp_path, tiny_options(small_imagenet, **{"train_cfg.max_epochs": 1}))
    runner.train()
    assert runner.model.sdae.teacher is None
    assert len(train_losses(tmp_path)) == 3


class CountingEMA:
    def __init__(self, monkeypatch):
        self.momenta = []
        original = SdAEPretrainer.update_teacher

        def counted(model, momentum):
            self.momenta.append(momentum)
            original(model, momentum)

        monkeypatch.setattr(SdAEPretrainer, "update_teacher", counted)


def test_per_epoch_ema_runs_once_per_epoch(tmp_path, small_imagenet, monkeypatch):
    calls = CountingEMA(monkeypatch)
    build_runner(TINY_CONFIG, tmp_path, tiny_options(small_imagenet, **{"train_cfg.max_epochs": 3})).train()
    from pretrain.models import cosine_momentum

    assert calls.momenta == [cosine_momentum(e, 3) for e in range(3)]  # 3 epochs x 3 iterations


def test_per_iteration_ema_follows_optimizer_steps(tmp_path, small_imagenet, monkeypatch):
    calls = CountingEMA(monkeypatch)
    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 2,
            "train_dataloader.batch_size": 8,  # 6 iterations per epoch
            "optim_wrapper.accumulative_counts": 2,
            "custom_hooks": [dict(type="TeacherEMAHook", interval="iter", momentum=0.999, final_momentum=0.9999)],
        },
    )
    build_runner(TINY_CONFIG, tmp_path, options).train()
    assert len(calls.momenta) == 6  # 12 iterations / 2 accumulated
    assert calls.momenta[:3] == [0.999] * 3


@HOOKS.register_module(force=True)
class StopAfterFirstEpoch(Hook):
    priority = "LOWEST"  # after the checkpoint hook

    def after_train_epoch(self, runner):
        if runner.epoch == 0:
            raise KeyboardInterrupt("simulated preemption")


@pytest.mark.slow
def test_stop_and_resume_continues_identically(tmp_path, small_imagenet):
    options = tiny_options(small_imagenet, **{"train_cfg.max_epochs": 2})
    straight = build_runner(TINY_CONFIG, tmp_path / "straight", options)
    straight.train()

    interrupted = dict(options)
    interrupted["custom_hooks"] = [*straight.cfg.custom_hooks, dict(type="StopAfterFirstEpoch")]
    with pytest.raises(KeyboardInterrupt):
        build_runner(TINY_CONFIG, tmp_path / "resumed", interrupted).train()
    assert (tmp_path / "resumed/last_checkpoint").read_text().strip().endswith("epoch_1.pth")
    resumed = build_runner(TINY_CONFIG, tmp_path / "resumed", options)  # auto-resume
    resumed.train()

    assert train_losses(tmp_path / "straight")[3:] == train_losses(tmp_path / "resumed")[-3:]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = straight.optim_wrapper.state_dict()["state"], resumed.optim_wrapper.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    assert straight.optim_wrapper.get_lr() == resumed.optim_wrapper.get_lr()


@HOOKS.register_module(force=True)
class PoisonAtIteration(Hook):
    """Puts a NaN into one student weight before iteration ``at``; records the
    state the failed iteration must leave untouched."""

    priority = "LOWEST"

    def __init__(self, at: int):
        self.at = at
        self.before = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            model = runner.model
            self.before = {k: v.clone() for k, v in model.state_dict().items()}
            with torch.no_grad():
                model.sdae.student.blocks[0].mlp.fc1.weight[0, 0] = float("nan")


def test_non_finite_loss_stops_before_the_step_and_the_ema(tmp_path, small_imagenet):
    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 3,
            "custom_hooks": [
                dict(type="TeacherEMAHook", interval="iter", momentum=0.9, final_momentum=0.9),
                dict(type="PoisonAtIteration", at=4),
            ],
        },
    )
    runner = build_runner(TINY_CONFIG, tmp_path, options)
    with pytest.raises(NonFiniteLossError, match="at iteration 4 "):
        runner.train()
    poison = next(h for h in runner.hooks if isinstance(h, PoisonAtIteration))
    after = runner.model.state_dict()
    poisoned = "sdae.student.blocks.0.mlp.fc1.weight"
    for key, value in poison.before.items():
        if key != poisoned:
            assert torch.equal(after[key], value), key  # no optimizer step, no EMA update
    # The last good checkpoint (epoch 1, before the bad iteration) is intact and finite.
    assert (tmp_path / "last_checkpoint").read_text().strip().endswith("epoch_1.pth")
    ckpt = torch.load(tmp_path / "epoch_1.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_unreadable_image_stops_training_with_its_name(tmp_path, small_imagenet):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_imagenet, data)
    bad = sorted((data / "train").rglob("*.JPEG"))[5]
    bad.write_bytes(b"\x00" * 64)
    options = tiny_options(
        data,
        **{"train_cfg.max_epochs": 1, "train_dataloader.num_workers": 2, "train_dataloader.persistent_workers": False},
    )
    with pytest.raises(Exception, match=bad.name):
        build_runner(TINY_CONFIG, tmp_path / "work", options).train()


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path, small_imagenet):
    result = run_tool(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29561",
        "tools/train.py",
        str(TINY_CONFIG),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(tmp_path),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={small_imagenet}",
        "train_dataloader.batch_size=8",
        "train_dataloader.num_workers=0",
        "train_cfg.max_epochs=2",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "effective batch 16 (2 process(es) x 8 x 1 accumulation)" in result.stdout + result.stderr
    ckpt = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    states = ckpt["random_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


def test_cpu_refuses_amp_with_a_clear_message(tmp_path):
    result = run_tool(
        "tools/train.py",
        str(REPO / "pretrain/configs/sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"),
        "--work-dir",
        str(tmp_path),
    )
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: AMP is allowed")
    assert result.returncode != 0 and "--amp none" in result.stderr


def test_ema_hook_refuses_iteration_based_loops(tmp_path, small_imagenet):
    options = tiny_options(small_imagenet, train_cfg=dict(_delete_=True, type="IterBasedTrainLoop", max_iters=2))
    with pytest.raises(ValueError, match="EpochBasedTrainLoop"):
        build_runner(TINY_CONFIG, tmp_path, options).train()
