"""CUDA-only checks (skipped where torch sees no GPU; tools/device_check.sh runs them).

They repeat on the GPU what the CPU tests cannot show: the training step under
``torch.cuda.set_sync_debug_mode("error")``, which SDPA kernels run, compiled
blocks with inductor, the biased dense attention on the memory-efficient
kernel, and nvJPEG decoding against the CPU path.
"""

import copy

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from pretrain.models import SdAE, random_patch_mask
from pretrain.models.attention import explicit_attention, sdpa_kernels

from conftest import TINY_CONFIG, jitter, tiny_options

pytestmark = pytest.mark.gpu


def cuda_runner(work_dir, options: dict):
    """The Runner as tools/train.py builds it, bf16 autocast, fused AdamW."""
    from mmengine.runner import Runner

    from pretrain.engine.runtime import prepare_config

    options = {**copy.deepcopy(options), "optim_wrapper.optimizer.fused": True, "train_dataloader.pin_memory": True}
    cfg, _ = prepare_config(str(TINY_CONFIG), str(work_dir), "auto", "bf16", options, "none")
    return Runner.from_cfg(cfg)


def test_bf16_autocast_step_matches_fp32():
    torch.manual_seed(0)
    model = SdAE(arch="small", img_size=224).cuda()
    imgs = torch.randn(8, 3, 224, 224, device="cuda")
    mask = random_patch_mask(8, 196, 0.75, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    fp32 = model(imgs, mask)["loss"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = model(imgs, mask)["loss"]
    assert bf16.dtype == torch.float32  # the loss is computed in fp32 under autocast
    assert bf16.item() == pytest.approx(fp32.item(), abs=2e-2)
    bf16.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.student.parameters() if p.grad is not None)


@HOOKS.register_module(force=True)
class SyncsAreErrors(Hook):
    """Any host synchronisation inside iterations ``first``..``last`` raises
    (torch.cuda.set_sync_debug_mode("error")); the window spans every hook."""

    priority = "HIGHEST"

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.checked: list[int] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.first <= runner.iter <= self.last:
            torch.cuda.set_sync_debug_mode("error")
            self.checked.append(runner.iter)


@HOOKS.register_module(force=True)
class SyncsAllowed(Hook):
    priority = "LOWEST"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        torch.cuda.set_sync_debug_mode("default")


def test_training_iterations_do_not_synchronise(tmp_path, small_imagenet):
    # 48 images, batch 8: 6 iterations per epoch; the flush after iteration 5 (epoch end)
    # synchronises on purpose, iteration 0 initialises the optimizer state
    options = tiny_options(
        small_imagenet,
        **{
            "train_dataloader.batch_size": 8,
            "train_cfg.max_epochs": 1,
            "default_hooks.logger.interval": 100,
            "custom_hooks": [
                dict(type="TeacherEMAHook", interval="iter", momentum=0.99, final_momentum=0.99),
                dict(type="SyncsAreErrors", first=1, last=4),
                dict(type="SyncsAllowed"),
            ],
        },
    )
    runner = cuda_runner(tmp_path, options)
    try:
        runner.train()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert next(h for h in runner.hooks if isinstance(h, SyncsAreErrors)).checked == [1, 2, 3, 4]
    assert len(runner.message_hub.get_scalar("train/loss").data[0]) == 6


def test_non_finite_loss_is_skipped_on_the_gpu_and_stops_the_run(tmp_path, small_imagenet):
    from test_fast_step import NaNLossAtIteration

    from pretrain.engine import NonFiniteLossError

    options = tiny_options(
        small_imagenet,
        **{
            "train_cfg.max_epochs": 2,
            "default_hooks.logger.interval": 100,
            "custom_hooks": [
                dict(type="TeacherEMAHook", interval="iter", momentum=0.9, final_momentum=0.9),
                dict(type="NaNLossAtIteration", at=3),
            ],
        },
    )
    runner = cuda_runner(tmp_path, options)
    with pytest.raises(NonFiniteLossError, match="at iteration 3 "):
        runner.train()
    poison = next(h for h in runner.hooks if isinstance(h, NaNLossAtIteration))
    after = runner.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in poison.model_before.items())
    state = runner.optim_wrapper.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i][k], v) for i, s in poison.optimizer_before.items() for k, v in s.items())


def sdae_step(model: SdAE, imgs: torch.Tensor, mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(imgs, mask)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_student_teacher_and_decoder_run_flash_attention_in_bf16():
    torch.manual_seed(0)
    model = SdAE(arch="small", img_size=224, drop_path_rate=0.0).cuda()
    imgs = torch.randn(8, 3, 224, 224, device="cuda")
    mask = model.sample_mask(8, imgs.device)
    kernels = sdpa_kernels(lambda: sdae_step(model, imgs, mask))
    # one fused call per block: 12 student, 12 teacher (3 folds batched), 8 decoder
    assert set(kernels) <= {"flash", "cudnn"} and sum(kernels.values()) == 12 + 12 + 8, kernels
    loss, grads = sdae_step(model, imgs, mask)
    with explicit_attention(model):
        explicit_loss, explicit_grads = sdae_step(model, imgs, mask)
    assert loss.item() == pytest.approx(explicit_loss.item(), abs=1e-2)
    grad = torch.cat([g.flatten() for g in grads.values()])
    explicit = torch.cat([explicit_grads[n].flatten() for n in grads])
    assert torch.nn.functional.cosine_similarity(grad, explicit, dim=0) > 0.99


def test_compiled_blocks_match_eager_with_inductor():
    torch.manual_seed(0)
    kwargs = dict(arch="tiny", img_size=96, drop_path_rate=0.0, decoder=dict(embed_dim=128, depth=2, num_heads=4))
    eager = SdAE(**kwargs).cuda()
    compiled = SdAE(**kwargs, compile_blocks=True).cuda()
    compiled.load_state_dict(eager.state_dict())
    imgs = torch.randn(8, 3, 96, 96, device="cuda")
    mask = eager.sample_mask(8, imgs.device)
    loss, grads = sdae_step(eager, imgs, mask)
    compiled_loss, compiled_grads = sdae_step(compiled, imgs, mask)
    assert compiled_loss.item() == pytest.approx(loss.item(), abs=5e-3)
    for name, grad in grads.items():
        assert torch.nn.functional.cosine_similarity(grad.flatten(), compiled_grads[name].flatten(), dim=0) > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_relative_bias_attention_runs_the_memory_efficient_kernel(dtype):
    """The learnable per-block bias (ADE20K) needs a kernel that takes an additive
    bias and returns its gradient: on CUDA that is the memory-efficient kernel."""
    from pretrain.models.dense import DenseViT

    torch.manual_seed(0)
    arch = dict(patch_size=16, embed_dim=384, depth=4, num_heads=6, grid=(8, 8))
    model = DenseViT(arch=arch, img_size=512, out_indices=(0, 1, 2, 3), norm="BN", drop_path_rate=0.0)
    model = jitter(model).train().cuda()
    x = torch.randn(2, 3, 512, 512, device="cuda")

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = sum((o.float() ** 2).mean() for o in model(x))
        loss.backward()
        return loss.detach(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}

    kernels = sdpa_kernels(step)
    assert set(kernels) <= {"memory_efficient", "cudnn"} and sum(kernels.values()) == 4, kernels
    loss, grads = step()
    with explicit_attention(model):
        explicit_loss, explicit_grads = step()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert loss.item() == pytest.approx(explicit_loss.item(), rel=tol)
    for i in range(4):
        name = f"encoder.blocks.{i}.attn.relative_position_bias_table"
        cos = torch.nn.functional.cosine_similarity(grads[name].flatten(), explicit_grads[name].flatten(), dim=0)
        assert cos > (0.9999 if dtype == torch.float32 else 0.99), (name, cos)


def test_nvjpeg_decoding_matches_the_cpu_path(tmp_path, synthetic_imagenet):
    from test_device_decode import cpu_and_encoded, mixed_folder

    from pretrain.data.device_decode import decode_and_crop

    root = mixed_folder(tmp_path / "mixed", synthetic_imagenet)
    expected, batch, names = cpu_and_encoded(root, 64, seed=0)
    decoded = decode_and_crop(batch["inputs"], batch["crop"], "cuda")
    assert decoded.is_cuda and decoded.dtype == torch.uint8 and decoded.shape == expected.shape
    diff = (decoded.cpu().int() - expected.int()).abs().float()
    # the same crops; nvJPEG's IDCT and chroma upsampling may differ from libjpeg's by a few levels
    assert diff.mean() < 1.0, diff.mean(dim=(1, 2, 3))
    assert diff.flatten().quantile(0.99) <= 8, names


def test_nvjpeg_decoding_names_an_unreadable_file(tmp_path, synthetic_imagenet):
    from test_device_decode import mixed_folder
    from torch.utils.data import default_collate

    from pretrain.data import PretrainImageDataset, UnreadableImageError
    from pretrain.engine.model import IMAGENET_MEAN, IMAGENET_STD, PretrainDataPreprocessor

    root = mixed_folder(tmp_path / "mixed", synthetic_imagenet)
    bad = sorted(root.glob("*.JPEG"))[2]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    dataset = PretrainImageDataset(str(root), subdir="", img_size=32, decode="device")
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    preprocess = PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD).cuda()
    with pytest.raises(UnreadableImageError, match=bad.name):
        preprocess(batch, True)
