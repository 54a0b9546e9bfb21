"""The GPU-friendly training step, checked on the CPU: no host synchronisation in
an iteration, the device-side non-finite guard, compiled blocks, fused attention
and bf16 autocast with fp32 targets and loss. (tests/test_gpu.py repeats the
device-specific parts on CUDA.)"""

import json
from collections import defaultdict

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from pretrain.engine import NonFiniteLossError
from pretrain.models import SdAE, random_patch_mask
from pretrain.models.attention import explicit_attention, sdpa_kernels

from conftest import TINY_CONFIG, build_runner, tiny_options

# Tensor methods that make the host wait for a CUDA device: a value or a copy on the host.
SYNCING_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")


class SyncCounter:
    """Calls of :data:`SYNCING_METHODS`, by iteration, while an iteration is open
    (from the first ``before_train_iter`` hook to the last ``after_train_iter``
    hook: the model step, the optimizer, the EMA and every hook; data loading
    happens outside)."""

    def __init__(self) -> None:
        self.iteration: int | None = None
        self.calls: dict[int, list[str]] = defaultdict(list)

    def install(self, monkeypatch) -> None:
        for name in SYNCING_METHODS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.iteration is not None:
                    self.calls[self.iteration].append(_name)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


COUNTER = SyncCounter()


@HOOKS.register_module(force=True)
class OpenIteration(Hook):
    priority = "HIGHEST"

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        COUNTER.iteration = runner.iter


@HOOKS.register_module(force=True)
class CloseIteration(Hook):
    priority = "LOWEST"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        COUNTER.iteration = None


def counted_run(tmp_path, data_root, monkeypatch, fused: bool) -> dict[int, list[str]]:
    """One epoch of 3 iterations, EMA after every step, the logger writing only at the epoch's end."""
    global COUNTER
    COUNTER = SyncCounter()
    options = tiny_options(
        data_root,
        **{
            "train_cfg.max_epochs": 1,
            "default_hooks.logger.interval": 100,
            "optim_wrapper.optimizer.fused": fused,
            "custom_hooks": [
                dict(type="TeacherEMAHook", interval="iter", momentum=0.99, final_momentum=0.99),
                dict(type="OpenIteration"),
                dict(type="CloseIteration"),
            ],
        },
    )
    runner = build_runner(TINY_CONFIG, tmp_path, options)
    COUNTER.install(monkeypatch)
    runner.train()
    monkeypatch.undo()
    return {i: COUNTER.calls.get(i, []) for i in range(3)}


def test_training_iterations_do_not_synchronise_with_the_host(tmp_path, small_imagenet, monkeypatch):
    deferred = counted_run(tmp_path / "fused", small_imagenet, monkeypatch, fused=True)
    # Only the epoch's last iteration moves the pending losses to the host, in one transfer.
    assert deferred == {0: [], 1: [], 2: ["tolist"]}
    # Control: with a non-fused optimizer the loss is checked on the host every iteration,
    # and mmengine logs it as a float - the counter sees those.
    per_iteration = counted_run(tmp_path / "foreach", small_imagenet, monkeypatch, fused=False)
    assert all(len(calls) >= 2 for calls in per_iteration.values()), per_iteration


@HOOKS.register_module(force=True)
class NaNLossAtIteration(Hook):
    """Makes iteration ``at``'s loss NaN (weights and data stay finite, so the
    next loss is finite again) and records the state before that iteration."""

    priority = "LOWEST"

    def __init__(self, at: int):
        self.at = at
        self.model_before = self.optimizer_before = self.handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.at:
            return
        self.model_before = {k: v.clone() for k, v in runner.model.state_dict().items()}
        state = runner.optim_wrapper.optimizer.state_dict()["state"]
        self.optimizer_before = {i: {k: v.clone() for k, v in s.items()} for i, s in state.items()}
        self.handle = runner.model.sdae.register_forward_hook(
            lambda module, args, out: {"loss": out["loss"] * torch.nan}
        )

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.at:
            self.handle.remove()


def test_non_finite_loss_skips_every_later_update_on_the_device_and_stops_at_the_flush(tmp_path, small_imagenet):
    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 2,
            "default_hooks.logger.interval": 100,  # flushes only at epoch ends: after iterations 2 and 5
            "optim_wrapper.optimizer.fused": True,
            "custom_hooks": [
                dict(type="TeacherEMAHook", interval="iter", momentum=0.9, final_momentum=0.9),
                dict(type="NaNLossAtIteration", at=3),
            ],
        },
    )
    runner = build_runner(TINY_CONFIG, tmp_path, options)
    with pytest.raises(NonFiniteLossError, match=r"at iteration 3 \(epoch 1\), found by the check after iteration 5"):
        runner.train()
    poison = next(h for h in runner.hooks if isinstance(h, NaNLossAtIteration))
    # Iterations 4 and 5 had finite losses, yet their steps and EMA updates were skipped
    # as well: student, decoder, teacher and optimizer state are exactly as before iteration 3.
    after = runner.model.state_dict()
    assert after.keys() == poison.model_before.keys()
    assert all(torch.equal(after[k], v) for k, v in poison.model_before.items())
    state = runner.optim_wrapper.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i][k], v) for i, s in poison.optimizer_before.items() for k, v in s.items())
    # Only the good iterations reached the log; no checkpoint was written after them.
    assert len(runner.message_hub.get_scalar("train/loss").data[0]) == 3
    assert (tmp_path / "last_checkpoint").read_text().strip().endswith("epoch_1.pth")


@HOOKS.register_module(force=True)
class NoDeferredLoss(Hook):
    """Stands in for DeferredLossHook: the model then checks and logs every iteration."""


def test_deferred_losses_reach_the_log_unchanged(tmp_path, small_imagenet):
    def logged(work_dir, **extra):
        options = tiny_options(
            small_imagenet,
            **{"train_cfg.max_epochs": 1, "default_hooks.logger.interval": 2, "optim_wrapper.optimizer.fused": True},
            **extra,
        )
        runner = build_runner(TINY_CONFIG, work_dir, options)
        runner.train()
        # every iteration's value in the message hub, and what the logger wrote (window means)
        (scalars,) = work_dir.glob("*/vis_data/scalars.json")
        written = [json.loads(line)["loss"] for line in scalars.read_text().splitlines() if '"loss"' in line]
        return runner.message_hub.get_scalar("train/loss").data[0].tolist(), written

    deferred, deferred_log = logged(tmp_path / "deferred")
    per_iteration, per_iteration_log = logged(
        tmp_path / "per-iteration", **{"default_hooks.deferred_loss": dict(type="NoDeferredLoss")}
    )
    assert len(deferred) == 3 and deferred == per_iteration
    # the logger writes after iteration 1 (interval 2): the mean of two values that reached
    # the message hub together, just before it
    assert len(deferred_log) == 1 and deferred_log == per_iteration_log


def tiny_sdae(**kwargs) -> SdAE:
    torch.manual_seed(0)
    return SdAE(arch="micro", img_size=32, decoder=dict(embed_dim=64, depth=2, num_heads=4), **kwargs)


def loss_and_grads(model: SdAE, imgs, mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same stochastic depth draws
    loss = model(imgs, mask)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def batch(size: int = 4):
    imgs = torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return imgs, random_patch_mask(size, 64, 0.75, generator=torch.Generator().manual_seed(3))


def test_compiled_blocks_match_eager():
    eager = tiny_sdae(drop_path_rate=0.1)
    compiled = tiny_sdae(drop_path_rate=0.1, compile_blocks=dict(backend="aot_eager", fullgraph=True))
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())  # names unchanged
    imgs, mask = batch()
    loss, grads = loss_and_grads(eager, imgs, mask)
    compiled_loss, compiled_grads = loss_and_grads(compiled, imgs, mask)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-6, atol=1e-6)
    assert compiled_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    # the blocks did run compiled (fullgraph: one graph, no break)
    for blocks in (compiled.student.blocks, compiled.teacher.blocks, compiled.decoder.blocks):
        assert all(block._compiled_call_impl is not None for block in blocks)


def test_student_teacher_and_decoder_attend_through_the_fused_kernel():
    model = tiny_sdae()
    imgs, mask = batch()
    kernels = sdpa_kernels(lambda: loss_and_grads(model, imgs, mask))
    # CPU: torch's fused flash kernel; one call per block (4 student, 4 teacher - the 3 folds
    # batched as one sequence batch - and 2 decoder blocks), never the math fallback
    assert kernels == {"flash_cpu": 4 + 4 + 2}
    loss, grads = loss_and_grads(model, imgs, mask)
    with explicit_attention(model):
        assert sdpa_kernels(lambda: loss_and_grads(model, imgs, mask)) == {}
        explicit_loss, explicit_grads = loss_and_grads(model, imgs, mask)
    torch.testing.assert_close(loss, explicit_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, explicit_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_keeps_teacher_targets_and_the_loss_in_fp32(monkeypatch):
    import pretrain.models.sdae as sdae_module

    model = tiny_sdae()
    imgs, mask = batch()
    fp32_loss, _ = loss_and_grads(model, imgs, mask)
    seen = {}
    normalize, cosine = sdae_module.normalize_per_token, sdae_module.cosine_loss

    def record_normalize(x):
        seen["normalised target"] = x.dtype
        return normalize(x)

    def record_cosine(pred, target, axis):
        seen["prediction"], seen["target"] = pred.dtype, target.dtype
        return cosine(pred, target, axis)

    monkeypatch.setattr(sdae_module, "normalize_per_token", record_normalize)
    monkeypatch.setattr(sdae_module, "cosine_loss", record_cosine)
    model.teacher.blocks[-1].mlp.fc2.register_forward_hook(lambda m, args, out: seen.__setitem__("teacher", out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_loss, grads = loss_and_grads(model, imgs, mask)
    assert seen == {
        "teacher": torch.bfloat16,  # autocast is on: the teacher's matrix products run in bf16
        "prediction": torch.bfloat16,
        "normalised target": torch.float32,  # Eq. 3 in fp32
        "target": torch.float32,
    }
    assert bf16_loss.dtype == torch.float32  # the cosine loss casts to fp32 itself
    assert bf16_loss.item() == pytest.approx(fp32_loss.item(), abs=2e-2)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
