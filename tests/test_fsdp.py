"""FSDP (FlexibleRunner + FullyShardStrategy, pretrain/engine/fsdp.py): a 2-process
CPU run against the plain Runner's DDP run, its resume, the ViT-L configs and the
refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

from pretrain.engine.runtime import apply_lr_scaling, effective_batch_size, prepare_config

from conftest import REPO, TINY_CONFIG, run_tool

TINY_FSDP_CONFIG = REPO / "pretrain/configs/sdae_vit-tiny-p16_fsdp-2xb16-10e_synthetic.py"
VIT_L_PRETRAIN = REPO / "pretrain/configs/sdae_vit-large-p16_fsdp-8xb96-amp-coslr-300e_in1k.py"
VIT_L_FINETUNE = REPO / "classification/configs/vit-large-p16_finetune_fsdp-8xb128-amp-50e_in1k.py"


def train_two_processes(config: Path, work_dir: Path, data_root: Path, port: int) -> str:
    """tools/train.py under torchrun, 2 CPU processes (gloo), 2 epochs of 3 iterations
    of 2 x 8 images; the teacher EMA after every step (6 updates, not 2) and fused AdamW
    as in the GPU recipes (DeferredLossHook's on-device path). Returns the log."""
    result = run_tool(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "tools/train.py",
        str(config),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data_root}",
        "train_dataloader.batch_size=8",
        "train_dataloader.num_workers=0",
        "train_cfg.max_epochs=2",
        "default_hooks.logger.interval=1",
        "custom_hooks.0.interval=iter",
        "custom_hooks.0.momentum=0.9",
        "optim_wrapper.optimizer.fused=True",
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return log


def logged_losses(work_dir: Path) -> list[float]:
    (scalars,) = work_dir.glob("*/vis_data/scalars.json")
    return [json.loads(line)["loss"] for line in scalars.read_text().splitlines() if '"loss"' in line]


def assert_states_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.slow
def test_fsdp_run_matches_ddp_and_resumes_exactly(tmp_path, small_imagenet):
    ddp_log = train_two_processes(TINY_CONFIG, tmp_path / "ddp", small_imagenet, 29571)
    fsdp_log = train_two_processes(TINY_FSDP_CONFIG, tmp_path / "fsdp", small_imagenet, 29572)
    assert all("losses stay on the device" in log for log in (ddp_log, fsdp_log))
    assert "sharded over 2 processes in 14 Block units and the root; whole on every rank: sdae.teacher" in fsdp_log

    # Same losses, same student, decoder and EMA teacher as the DDP run.
    losses = logged_losses(tmp_path / "fsdp")
    assert len(losses) == 6
    assert losses == pytest.approx(logged_losses(tmp_path / "ddp"), rel=1e-5)
    ddp = torch.load(tmp_path / "ddp/epoch_2.pth", weights_only=True)
    fsdp = torch.load(tmp_path / "fsdp/epoch_2.pth", weights_only=True)  # one whole file, weights_only-loadable
    assert_states_close(fsdp["state_dict"], ddp["state_dict"])
    start = torch.load(tmp_path / "fsdp/epoch_1.pth", weights_only=True)["state_dict"]
    teacher = [k for k in start if k.startswith("sdae.teacher.")]
    assert any(not torch.equal(start[k], fsdp["state_dict"][k]) for k in teacher)  # the EMA moved it
    assert len(fsdp["random_states"]) == 2 and fsdp["meta"]["effective_batch"]["images"] == 16

    # Weight decay chosen on the parameters' real shapes (FSDP1's 1-D shards would give 0 everywhere);
    # the teacher has no optimizer state.
    decay = {name: g["weight_decay"] for g in fsdp["optimizer"]["param_groups"] for name in g["params"]}
    for name, value in fsdp["state_dict"].items():
        if name.startswith("sdae.teacher.") or name.endswith("pos_embed"):  # frozen: sin-cos / EMA
            assert name not in decay
        else:
            assert decay[name] == (0.0 if value.ndim == 1 or name.endswith(".bias") else 0.04), name

    # A fresh FSDP run given the epoch-1 checkpoint (auto-resume) trains epoch 2 as the straight run did.
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "fsdp/epoch_1.pth", tmp_path / "resumed/epoch_1.pth")
    resumed_log = train_two_processes(TINY_FSDP_CONFIG, tmp_path / "resumed", small_imagenet, 29573)
    assert "resumed epoch: 1, iter: 3" in resumed_log
    assert logged_losses(tmp_path / "resumed") == losses[3:]
    resumed = torch.load(tmp_path / "resumed/epoch_2.pth", weights_only=True)
    assert_states_close(resumed["state_dict"], fsdp["state_dict"])
    for name, state in fsdp["optimizer"]["state"].items():
        torch.testing.assert_close(resumed["optimizer"]["state"][name]["exp_avg"], state["exp_avg"])


@pytest.mark.slow
def test_fsdp_fine_tuning_validates_and_keeps_layer_decay(tmp_path, small_imagenet):
    from suite.runner import prepare_backbone

    backbone = prepare_backbone("random:tiny", tmp_path / "backbone")
    finetune = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"
    result = run_tool(
        *("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29574"),
        *("tools/train.py", str(finetune), "--launcher", "pytorch", "--backbone", str(backbone)),
        *("--work-dir", str(tmp_path / "work"), "--cfg-options"),
        f"train_dataloader.dataset.data_root={small_imagenet}",
        f"val_dataloader.dataset.data_root={small_imagenet}",
        *("train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "train_dataloader.batch_size=8"),
        *("train_cfg.max_epochs=1", "train_cfg.val_interval=1"),
        *("runner_type=FlexibleRunner", "strategy.type=FullyShardStrategy"),
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    record = json.loads((tmp_path / "work/result.json").read_text())  # ResultsRecordHook after validation
    assert (record["iter"], record["max_iters"], record["world_size"]) == (3, 3, 2) and "top1" in record["metrics"]
    # Layer-wise lr decay found the blocks by their names under FSDP: block 0 at 0.65^12 of the head's lr.
    groups = torch.load(tmp_path / "work/epoch_1.pth", weights_only=True)["optimizer"]["param_groups"]
    lr_of = {name: g["lr"] for g in groups for name in g["params"]}
    ratio = lr_of["backbone.blocks.0.attn.qkv.weight"] / lr_of["head.weight"]
    assert ratio == pytest.approx(0.65**12)


@pytest.mark.slow
def test_flexible_runner_run_keeps_the_lock_and_the_training_set_check(tmp_path, small_imagenet):
    options = [f"train_dataloader.dataset.data_root={small_imagenet}", "train_dataloader.batch_size=64"]
    args = ["tools/train.py", str(TINY_FSDP_CONFIG), "--work-dir", str(tmp_path), "--cfg-options", *options]
    result = run_tool(*args, timeout=120)
    assert result.returncode != 0
    assert "fewer than one batch of 64" in result.stderr  # refused before the strategy builds anything
    assert f"tools/train.py {TINY_FSDP_CONFIG}" in (tmp_path / ".train.lock").read_text()  # held while it ran


def test_runner_choice_is_checked(tmp_path):
    with pytest.raises(ValueError, match="only FlexibleRunner reads"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"strategy": dict(type="FullyShardStrategy")})
    with pytest.raises(ValueError, match="runner_type must be one of Runner, FlexibleRunner"):
        prepare_config(str(TINY_CONFIG), str(tmp_path), False, None, {"runner_type": "FlexRunner"})
    with pytest.raises(ValueError, match="would decay none"):
        prepare_config(str(TINY_FSDP_CONFIG), str(tmp_path), False, None, {"strategy.type": "FSDPStrategy"})
    options = {"strategy.reshard_after_forward": False}
    cfg, _ = prepare_config(str(TINY_FSDP_CONFIG), str(tmp_path), False, None, options)
    assert cfg.strategy.reshard_after_forward is False  # strategy options are options like any other


def test_vit_large_pretraining_config():
    cfg = Config.fromfile(VIT_L_PRETRAIN)
    vit_b = Config.fromfile(REPO / "pretrain/configs/sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py")
    assert cfg.model.arch == "large"
    assert {k: v for k, v in cfg.model.items() if k != "arch"} == {k: v for k, v in vit_b.model.items() if k != "arch"}
    for key in ("optim_wrapper", "param_scheduler", "train_cfg", "train_dataloader", "custom_hooks", "lr_scaling"):
        assert cfg[key] == vit_b[key], key  # the published ViT-B recipe, scaled to ViT-L only
    assert cfg.runner_type == "FlexibleRunner"
    assert cfg.strategy == dict(type="FullyShardStrategy", unit_types=["Block"], replicated_modules=["sdae.teacher"])
    assert effective_batch_size(cfg, 8) == 768
    apply_lr_scaling(cfg, 8)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(8e-4, rel=1e-3)


def test_vit_large_finetuning_config():
    cfg = Config.fromfile(VIT_L_FINETUNE)
    # MAE's ViT-L fine-tuning: 50 epochs (5 warm-up), base lr 1e-3 at 1024, layer decay 0.75, drop path 0.2
    assert cfg.model.backbone.drop_path_rate == 0.2
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay == 0.75
    assert (cfg.optim_wrapper.dtype, cfg.optim_wrapper.loss_scale) == ("bfloat16", dict(enabled=False))
    assert effective_batch_size(cfg, 8) == 1024
    apply_lr_scaling(cfg, 8)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(4e-3)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, cosine.begin, cosine.end, cosine.T_max) == (5, 5, 50, 45)
    assert cfg.train_cfg.max_epochs == 50
    assert cfg.runner_type == "FlexibleRunner" and cfg.strategy == dict(type="FullyShardStrategy", unit_types=["Block"])


@pytest.mark.parametrize("config", [VIT_L_PRETRAIN, VIT_L_FINETUNE, TINY_FSDP_CONFIG])
def test_fsdp_configs_resolve(config, tmp_path):
    amp = None if torch.cuda.is_available() else "none"  # bf16 autocast needs a GPU
    cfg, line = prepare_config(str(config), str(tmp_path), False, amp, {}, "none")
    assert cfg.runner_type == "FlexibleRunner" and cfg.strategy.type == "FullyShardStrategy"
    assert "effective batch" in line


@pytest.fixture
def one_process_group(tmp_path):
    """A process group of this process alone (gloo), as torchrun would start with one process."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def fsdp_strategy(tmp_path, **options):
    from mmengine.registry import STRATEGIES

    import pretrain.engine  # noqa: F401  (registers FullyShardStrategy)

    return STRATEGIES.build(dict(type="FullyShardStrategy", work_dir=str(tmp_path), **options))


def tiny_sdae() -> dict:
    cfg = Config.fromfile(TINY_CONFIG)
    return cfg.model.to_dict()


def test_fsdp_refuses_a_single_process_run(tmp_path):
    with pytest.raises(RuntimeError, match="shards the model across processes, but this run has one"):
        fsdp_strategy(tmp_path, replicated_modules=["sdae.teacher"]).prepare(tiny_sdae())


def test_fsdp_refuses_wrong_module_names_and_a_trained_replica(tmp_path, one_process_group):
    with pytest.raises(ValueError, match=r"no submodule 'teacher'; did you mean 'sdae\.teacher'"):
        fsdp_strategy(tmp_path / "a", replicated_modules=["teacher"]).prepare(tiny_sdae())
    with pytest.raises(ValueError, match=r"'sdae\.decoder' has trainable parameters"):
        fsdp_strategy(tmp_path / "b", replicated_modules=["sdae.decoder"]).prepare(tiny_sdae())
    with pytest.raises(ValueError, match="no such layer"):
        fsdp_strategy(tmp_path / "c", unit_types=["TransformerBlock"]).prepare(tiny_sdae())


def test_ema_refuses_a_sharded_teacher(tmp_path, one_process_group):
    from torch.distributed.fsdp import fully_shard

    from pretrain.models import SdAE, ema_update_

    sdae = SdAE(arch="tiny", img_size=32, decoder=dict(embed_dim=32, depth=1, num_heads=2))
    fully_shard(sdae.teacher)
    with pytest.raises(ValueError, match="the EMA teacher is sharded by FSDP"):
        ema_update_(sdae.teacher, sdae.student, 0.9)


def test_vit_large_finetuning_refuses_a_backbone_of_another_size():
    from classification.models import build_backbone

    expect = Config.fromfile(VIT_L_FINETUNE).model.backbone.expect
    vit_b = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, grid=(2, 2))
    with pytest.raises(ValueError, match=r"encoder with \{'embed_dim': 768, 'depth': 12, 'num_heads': 12\}"):
        build_backbone(None, 32, arch=vit_b, expect=expect)
    tiny = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, grid=(2, 2))
    encoder, _ = build_backbone(None, 32, arch=tiny, expect=dict(embed_dim=192, depth=12))
    assert encoder.embed_dim == 192
