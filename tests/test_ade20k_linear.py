"""ADE20K linear segmentation on frozen features (DINOv2's protocol): the head against
BatchNorm + matmul by hand, the frozen tapped features against timm's ViT, a frozen
encoder through real training steps, and the configs against the published recipe."""

import json
from functools import partial

import pytest
import torch
from mmengine.config import Config
from test_real_suite import ALLOWED_KEY, config_differences
from timm.models.vision_transformer import VisionTransformer as TimmViT

import segmentation.engine  # noqa: F401  (registers LinearHead, DenseViT)
from pretrain.checkpoints import convert, save_backbone
from pretrain.data.synthetic import write_ade20k_like
from pretrain.models import build_vit
from pretrain.models.dense import DenseViT
from segmentation.linear_head import LinearHead

from conftest import REPO, build_runner, jitter, run_tool

FULL = REPO / "segmentation/configs/linear_vit-b16_8xb2-40k_ade20k-512x512.py"
FULL_MS = REPO / "segmentation/configs/linear-ms_vit-b16_8xb2-40k_ade20k-640x640.py"
REAL = REPO / "segmentation/configs/real/linear_vit-micro-p8_1xb4-2000it_realsuite-128x128.py"
MINI = REPO / "segmentation/configs/linear_vit-tiny-p16_1xb4-40it_synthetic-128x128.py"


def _head(in_channels: list[int], in_index: list[int], num_classes: int = 5) -> LinearHead:
    torch.manual_seed(0)
    head = LinearHead(
        in_channels=in_channels,
        in_index=in_index,
        channels=sum(in_channels),
        num_classes=num_classes,
        dropout_ratio=0.0,
        norm_cfg=dict(type="BN"),
    )
    with torch.no_grad():  # non-trivial statistics and affine parameters
        head.bn.running_mean.normal_()
        head.bn.running_var.uniform_(0.5, 2.0)
        head.bn.weight.normal_()
        head.bn.bias.normal_()
        head.conv_seg.weight.normal_()
        head.conv_seg.bias.normal_()
    return head.eval()


@pytest.mark.parametrize("in_index", [[3], [0, 1, 2, 3], [2, 0]])
def test_head_is_batchnorm_then_a_per_pixel_matmul_over_the_maps_in_in_index_order(in_index):
    torch.manual_seed(1)
    maps = [torch.randn(2, 6, 4, 5) for _ in range(4)]
    head = _head([6] * len(in_index), in_index)
    x = torch.cat([maps[i] for i in in_index], dim=1)
    bn = head.bn
    normed = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    normed = normed * bn.weight[:, None, None] + bn.bias[:, None, None]
    w = head.conv_seg.weight[:, :, 0, 0]  # (classes, channels)
    expected = torch.einsum("bchw,kc->bkhw", normed, w) + head.conv_seg.bias[None, :, None, None]
    with torch.no_grad():
        out = head(maps)
    assert out.shape == (2, 5, 4, 5)  # logits at the maps' (patch) resolution
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_head_refuses_a_width_that_is_not_the_concatenation():
    with pytest.raises(ValueError, match=r"channels must equal their width sum\(in_channels\) = 24"):
        LinearHead(in_channels=[6] * 4, in_index=[0, 1, 2, 3], channels=6, num_classes=3)
    with pytest.raises(ValueError, match="in_index as a list"):
        LinearHead(in_channels=6, in_index=3, channels=6, num_classes=3)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A canonical file of a depth-4 MAE-style ViT-tiny with non-trivial weights (its
    final norm included)."""
    vit = build_vit("tiny", img_size=64, depth=4)
    jitter(vit)
    path = tmp_path_factory.mktemp("linear") / "vit.safetensors"
    save_backbone(path, convert(vit.state_dict(), num_heads=3).backbone)
    return path, vit


def test_frozen_taps_are_the_final_normed_patch_tokens_of_timm_vit(vit_file):
    path, vit = vit_file
    model = DenseViT(str(path), img_size=64, out_indices=(1, 3), pyramid=False, final_norm=True, frozen=True)
    ref = TimmViT(
        img_size=64,
        patch_size=16,
        embed_dim=192,
        depth=4,
        num_heads=3,
        num_classes=0,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )
    ref.load_state_dict(vit.state_dict(), strict=True)
    ref.eval()
    imgs = torch.randn(2, 3, 64, 64, requires_grad=True)
    model.train()  # the Runner's mode: the frozen encoder must stay in eval mode
    assert not model.encoder.training and model.pyramid is None
    outs = model(imgs)
    with torch.no_grad():
        x = ref._pos_embed(ref.patch_embed(imgs))
        expected = []
        for i, block in enumerate(ref.blocks):
            x = block(x)
            if i in (1, 3):
                tokens = ref.norm(x)[:, 1:]  # DINOv2: get_intermediate_layers(norm=True), no class token
                expected.append(tokens.transpose(1, 2).reshape(2, 192, 4, 4))
    assert len(outs) == 2
    for out, exp in zip(outs, expected, strict=True):
        torch.testing.assert_close(out, exp, rtol=1e-5, atol=1e-5)
        assert not out.requires_grad  # no graph through the encoder
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_pyramid_still_needs_four_taps():
    arch = dict(patch_size=16, embed_dim=32, depth=4, num_heads=2, grid=(4, 4))
    with pytest.raises(ValueError, match="pyramid takes 4 taps"):
        DenseViT(arch=arch, img_size=64, out_indices=(3,), norm="BN")
    with pytest.raises(ValueError, match="increasing block indices"):
        DenseViT(arch=arch, img_size=64, out_indices=(3, 1), pyramid=False)
    assert len(DenseViT(arch=arch, img_size=64, out_indices=(3,), pyramid=False)(torch.randn(1, 3, 64, 64))) == 1


@pytest.fixture(scope="module")
def synthetic_ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade_linear")
    write_ade20k_like(root, num_train=8, num_val=2, seed=0)
    return root / "ADEChallengeData2016"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A 12-block ViT-tiny file (the mini config taps blocks 9-12)."""
    vit = build_vit("tiny", img_size=128)
    jitter(vit)
    path = tmp_path_factory.mktemp("linear_tiny") / "tiny.safetensors"
    save_backbone(path, convert(vit.state_dict(), num_heads=3).backbone)
    return path


def _options(data, iters: int) -> dict:
    return {
        **{f"{loader}.dataset.data_root": str(data) for loader in ("train_dataloader", "val_dataloader")},
        "train_dataloader.num_workers": 0,
        "val_dataloader.num_workers": 0,
        "train_cfg.max_iters": iters,
        "train_cfg.val_interval": iters,
        "default_hooks.checkpoint.interval": iters,
        "visualizer.vis_backends": [dict(type="LocalVisBackend")],
    }


@pytest.mark.slow
def test_training_changes_the_head_and_leaves_the_encoder_bit_identical(tiny_file, synthetic_ade, tmp_path):
    options = {**_options(synthetic_ade, 3), "model.backbone.checkpoint": str(tiny_file)}
    runner = build_runner(MINI, tmp_path, options, resume=False)
    model = runner.model
    encoder = {k: v.clone() for k, v in model.backbone.encoder.state_dict().items()}
    head = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    runner.train()
    optimized = {id(p) for group in runner.optim_wrapper.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.decode_head.parameters()}  # the encoder is left out
    after = model.backbone.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder.items())
    assert all(p.grad is None for p in model.backbone.encoder.parameters())
    changed = [k for k, v in model.decode_head.state_dict().items() if not torch.equal(v, head[k])]
    assert {"conv_seg.weight", "bn.weight", "bn.running_mean"} <= set(changed)


@pytest.mark.slow
def test_short_train_writes_miou_with_the_backbone(tiny_file, synthetic_ade, tmp_path):
    options = [f"{k}={v}" for k, v in _options(synthetic_ade, 4).items() if k != "visualizer.vis_backends"]
    result = run_tool(
        "tools/train.py", str(MINI), "--backbone", str(tiny_file), "--work-dir", str(tmp_path), "--amp", "none",
        "--cfg-options", *options,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["task"] == "ade20k" and record["split"] == "val" and record["iter"] == 4
    assert 0.0 <= record["metrics"]["mIoU"] <= 100.0
    assert record["backbone"]["file"] == str(tiny_file)


# --------------------------------------------------------------------------- configs


def test_full_config_is_dinov2s_linear_recipe():
    """DINOv2's released dinov2_vitb14_ade20k_linear_config.py, with ViT-B/16."""
    cfg = Config.fromfile(FULL)
    backbone, head = cfg.model.backbone, cfg.model.decode_head
    assert (backbone.frozen, backbone.final_norm, backbone.pyramid) == (True, True, False)
    assert backbone.out_indices == (8, 9, 10, 11) and head.in_index == [3] and head.in_channels == [768]
    assert (head.type, head.dropout_ratio, head.norm_cfg.type) == ("LinearHead", 0.0, "SyncBN")
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    assert cfg.train_dataloader.batch_size * 8 == 16 and cfg.train_cfg.max_iters == 40000
    opt = cfg.optim_wrapper
    assert (opt.type, opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == (
        "OptimWrapper", "AdamW", 1e-3, 1e-4,
    )  # fmt: skip
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, warmup.start_factor, poly.power, poly.eta_min, poly.end) == (1500, 1e-6, 1.0, 0.0, 40000)
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert (resize.scale, resize.ratio_range) == ((99999999, 512), (0.5, 2.0))
    ms = Config.fromfile(FULL_MS)
    assert ms.model.decode_head.in_index == [0, 1, 2, 3] and ms.model.decode_head.channels == 4 * 768
    assert ms.model.test_cfg.crop_size == (640, 640) and ms.tta_ratios == [1.0, 1.32, 1.73, 2.28, 3.0]


@pytest.mark.parametrize("shrunk", [REAL, MINI], ids=["real", "mini"])
def test_shrunk_configs_differ_from_the_recipe_only_in_size_and_schedule(shrunk):
    differences = config_differences(Config.fromfile(FULL), Config.fromfile(shrunk))
    assert differences and [k for k in differences if not ALLOWED_KEY.fullmatch(k)] == []
