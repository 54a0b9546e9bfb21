import copy
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "pretrain/configs/sdae_vit-tiny-p16_1xb32-10e_synthetic.py"
MAE_TINY_CONFIG = REPO / "pretrain/configs/mae_vit-tiny-p16_1xb32-10e_synthetic.py"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synthetic_imagenet(tmp_path_factory) -> Path:
    """The generator's default set: 8 classes x 40 train / 10 val images, 112 px."""
    from pretrain.data.synthetic import write_imagenet_like

    root = tmp_path_factory.mktemp("synthetic_imagenet")
    write_imagenet_like(root, seed=0)
    return root


@pytest.fixture(scope="session")
def small_imagenet(tmp_path_factory) -> Path:
    """48 training images: 3 iterations of 16 per epoch, for fast Runner tests."""
    from pretrain.data.synthetic import write_imagenet_like

    root = tmp_path_factory.mktemp("small_imagenet")
    write_imagenet_like(root, num_classes=4, train_per_class=12, val_per_class=2, image_size=112, seed=1)
    return root


def tiny_options(data_root: Path, **extra) -> dict:
    """cfg-options that keep Runner tests small and single-process."""
    options = {
        "train_dataloader.dataset.data_root": str(data_root),
        "train_dataloader.batch_size": 16,
        "train_dataloader.num_workers": 0,
        "default_hooks.logger.interval": 1,
        "visualizer.vis_backends": [dict(type="LocalVisBackend")],
    }
    options.update(extra)
    return options


def build_runner(config: Path, work_dir: Path, options: dict, resume="auto"):
    """The Runner exactly as tools/train.py builds it."""
    from mmengine.runner import Runner

    from pretrain.engine.runtime import prepare_config

    cfg, _ = prepare_config(str(config), str(work_dir), resume, None, copy.deepcopy(options), "none")
    return Runner.from_cfg(cfg)


def jitter(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter and switch to eval mode: zero
    relative tables, unit layer scales and zero biases would hide mapping mistakes."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module.eval()


def timm_vit_like(model) -> torch.nn.Module:
    """timm's own VisionTransformer with ``model``'s weights, loaded strictly: the
    independent reference for the project's encoder."""
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    ref = VisionTransformer(
        img_size=model.patch_embed.img_size,
        patch_size=model.patch_size,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=model.blocks[0].attn.num_heads,
        num_classes=0,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval()


def run_tool(*args: str, timeout: int = 600, **kwargs):
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_gpu)


def convert_source_layouts(out: Path, img_size: int) -> dict[str, Path]:
    """Canonical files made by tools/convert_checkpoint.py from two foreign layouts of one
    ViT-tiny SdAE: this project's training checkpoint ("project", student encoder)
    and an official-MAE-layout file ("mae", the same student plus a mask token)."""
    from pretrain.models import SdAE

    torch.manual_seed(0)
    sdae = SdAE(arch="tiny", img_size=img_size, decoder=dict(embed_dim=32, depth=1, num_heads=2))
    sources = {
        "project": {"state_dict": {f"sdae.{k}": v for k, v in sdae.state_dict().items()}, "meta": {"epoch": 1}},
        "mae": {"model": {**sdae.student.state_dict(), "mask_token": torch.zeros(1, 1, 32)}},
    }
    paths = {}
    for name, obj in sources.items():
        torch.save(obj, out / f"{name}.pth")
        paths[name] = out / f"{name}.safetensors"
        result = run_tool(str(REPO / "tools/convert_checkpoint.py"), str(out / f"{name}.pth"), str(paths[name]))
        assert result.returncode == 0, result.stderr
    return paths
