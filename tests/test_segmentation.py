"""ADE20K with UperNet on the dense ViT: real mmseg pipelines on the generated data."""

import json
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from PIL import Image

import segmentation.engine  # noqa: F401
from pretrain.data.checks import check_dataset
from pretrain.data.synthetic import write_ade20k_like

from conftest import REPO, convert_source_layouts, run_tool

TINY = REPO / "segmentation/configs/upernet_vit-tiny-p16_1xb4-40it_synthetic-128x128.py"
VIT_B = REPO / "segmentation/configs/upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py"


@pytest.fixture(scope="module")
def synthetic_ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade")
    write_ade20k_like(root, num_train=16, num_val=4, seed=0)
    return root


def test_generator_layout_and_labels(synthetic_ade, tmp_path):
    base = synthetic_ade / "ADEChallengeData2016"
    ann = Image.open(base / "annotations/training/ADE_train_00000001.png")
    img = Image.open(base / "images/training/ADE_train_00000001.jpg")
    assert ann.mode == "L" and ann.size == img.size
    values = set(torch.tensor(list(ann.getdata())).unique().tolist())
    assert 0 in values and values <= set(range(9))  # 0 = ignore, classes 1..8
    write_ade20k_like(tmp_path / "again", num_train=16, num_val=4, seed=0)
    again = tmp_path / "again/ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    assert again.read_bytes() == (base / "annotations/training/ADE_train_00000001.png").read_bytes()


def test_ade_checker_names_what_is_wrong(synthetic_ade, tmp_path):
    root = tmp_path / "ade"
    shutil.copytree(synthetic_ade, root)
    assert check_dataset(root, "ade20k").ok
    base = root / "ADEChallengeData2016"
    (base / "annotations/training/ADE_train_00000002.png").unlink()
    Image.new("L", (64, 64)).save(base / "annotations/training/ADE_train_00000003.png")
    Image.new("RGB", (128, 128)).save(base / "annotations/validation/ADE_val_00000001.png")
    (base / "images/validation/ADE_val_00000002.jpg").write_bytes(b"broken")
    report = check_dataset(root, "ade20k")
    text = "\n".join(report.layout)
    assert "ADE_train_00000002.jpg: no label map" in text
    assert "ADE_train_00000003.png: size (64, 64) differs" in text
    assert "ADE_val_00000001.png: label map mode RGB" in text
    assert [p.name for p, _ in report.unreadable] == ["ADE_val_00000002.jpg"]


def test_vit_b_recipe_values():
    cfg = Config.fromfile(VIT_B)
    backbone = cfg.model.backbone
    assert (backbone.out_indices, backbone.rel_pos_bias, backbone.layer_scale_init) == ((3, 5, 7, 11), "per_block", 1.0)
    assert backbone.drop_path_rate == 0.1 and backbone.img_size == 512
    assert cfg.model.decode_head.channels == 768 and cfg.model.decode_head.pool_scales == (1, 2, 3, 6)
    assert cfg.model.auxiliary_head.in_index == 2 and cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    assert cfg.train_dataloader.batch_size * 8 == 16 and cfg.train_cfg.max_iters == 160000
    opt = cfg.optim_wrapper
    assert (opt.type, opt.dtype, opt.optimizer.weight_decay, opt.paramwise_cfg.layer_decay) == (
        "AmpOptimWrapper",
        "bfloat16",
        0.05,
        0.65,
    )
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, poly.type, poly.power, poly.end) == (1500, "PolyLR", 1.0, 160000)
    single = Config.fromfile(REPO / "segmentation/configs/upernet_vit-b16_1xb2-accum8-amp-160k_ade20k-512x512.py")
    assert single.train_dataloader.batch_size * single.optim_wrapper.accumulative_counts == 16


def test_layer_decay_groups_in_the_segmentor():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(TINY)
    cfg.model.backbone.arch = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, grid=(8, 8))
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {id(p): g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    base = cfg.optim_wrapper.optimizer.lr
    enc = model.backbone.encoder
    assert lr_of[id(enc.patch_embed.proj.weight)] == pytest.approx(base * 0.65**13)
    assert lr_of[id(enc.blocks[0].attn.relative_position_bias_table)] == pytest.approx(base * 0.65**12)
    assert lr_of[id(enc.blocks[11].mlp.fc1.weight)] == pytest.approx(base * 0.65)
    for module in (model.backbone.pyramid, model.decode_head, model.auxiliary_head):
        assert all(lr_of[id(p)] == pytest.approx(base) for p in module.parameters())


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    return convert_source_layouts(tmp_path_factory.mktemp("seg_backbones"), img_size=128)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["project", "mae"])
def test_short_train_and_slide_eval_write_miou(source, backbones, synthetic_ade, tmp_path):
    data = synthetic_ade / "ADEChallengeData2016"
    options = [
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        "train_dataloader.num_workers=0",
        "val_dataloader.num_workers=0",
        "train_cfg.max_iters=8",
        "train_cfg.val_interval=8",
        "default_hooks.checkpoint.interval=8",
    ]
    result = run_tool(
        str(REPO / "tools/train.py"),
        str(TINY),
        "--backbone",
        str(backbones[source]),
        "--work-dir",
        str(tmp_path),
        "--cfg-options",
        *options,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["task"] == "ade20k" and record["iter"] == 8
    assert 0.0 <= record["metrics"]["mIoU"] <= 100.0
    assert record["backbone"]["source_format"] == {"project": "sdae-suite", "mae": "official-mae"}[source]
    tested = run_tool(
        str(REPO / "tools/test.py"),
        str(TINY),
        str(tmp_path / "iter_8.pth"),
        "--backbone",
        str(backbones[source]),
        "--work-dir",
        str(tmp_path / "test"),
        "--cfg-options",
        f"test_dataloader.dataset.data_root={data}",
        "test_dataloader.num_workers=0",
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert json.loads((tmp_path / "test/result.json").read_text())["metrics"] == record["metrics"]
