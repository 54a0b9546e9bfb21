"""COCO Mask R-CNN + FPN on the dense ViT: real mmdet pipelines on the generated data."""

import json
import shutil

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import detection.engine  # noqa: F401
from pretrain.data.checks import check_dataset
from pretrain.data.synthetic import write_coco_like

from conftest import REPO, convert_source_layouts, run_tool

TINY = REPO / "detection/configs/mask-rcnn_vit-tiny-p16_fpn_1xb2-2e_synthetic.py"
VIT_B = REPO / "detection/configs/mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py"


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_coco_like(root, num_train=8, num_val=4, seed=0)
    return root


def test_generator_writes_valid_coco(synthetic_coco):
    from pycocotools.coco import COCO

    coco = COCO(str(synthetic_coco / "annotations/instances_val2017.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["box", "disc", "triangle"]
    ann = coco.loadAnns(coco.getAnnIds())[0]
    mask = coco.annToMask(ann)
    assert mask.shape == (128, 160) and abs(int(mask.sum()) - ann["area"]) <= 0.1 * ann["area"] + 10


def test_coco_checker_names_what_is_wrong(synthetic_coco, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco, root)
    assert check_dataset(root, "coco").ok
    ann_file = root / "annotations/instances_train2017.json"
    doc = json.loads(ann_file.read_text())
    doc["annotations"][0]["category_id"] = 99
    doc["annotations"][1]["bbox"] = [150, 10, 40, 20]
    doc["annotations"][2]["segmentation"] = [[1, 2, 3]]
    ann_file.write_text(json.dumps(doc))
    (root / "val2017/000000000002.jpg").unlink()
    report = check_dataset(root, "coco")
    text = "\n".join(report.layout)
    assert "unknown category_id 99" in text and "outside the 160x128 image" in text
    assert "even number (>= 6)" in text and "000000000002.jpg: listed in instances_val2017.json but missing" in text


def test_vit_b_recipe_values():
    cfg = Config.fromfile(VIT_B)
    backbone = cfg.model.backbone
    assert (backbone.rel_pos_bias, backbone.layer_scale_init, backbone.drop_path_rate) == ("none", 0.1, 0.2)
    assert backbone.out_indices == (3, 5, 7, 11) and cfg.model.neck.num_outs == 5
    head = cfg.model.roi_head.bbox_head
    assert (head.type, head.reg_decoded_bbox, head.loss_bbox.type, head.loss_bbox.loss_weight) == (
        "Shared4Conv1FCBBoxHead",
        True,
        "GIoULoss",
        10.0,
    )
    assert head.norm_cfg.type == "SyncBN" and cfg.model.roi_head.mask_head.num_convs == 4
    assert cfg.test_pipeline[1].scale == (1333, 800)
    assert [s[1] for s in cfg.multi_scale] == list(range(480, 801, 32))
    opt = cfg.optim_wrapper
    assert (opt.optimizer.lr, opt.optimizer.weight_decay, opt.paramwise_cfg.layer_decay) == (3e-4, 0.05, 0.75)
    warmup, steps = cfg.param_scheduler
    assert (warmup.end, steps.milestones, cfg.train_cfg.max_epochs) == (500, [9, 11], 12)
    single = Config.fromfile(REPO / "detection/configs/mask-rcnn_vit-b16_fpn_1xb2-accum16-amp-1x_coco.py")
    assert single.train_dataloader.batch_size * single.optim_wrapper.accumulative_counts == 32
    assert single.model.backbone.with_cp


def test_layer_decay_groups_in_the_detector():
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(TINY)
    cfg.model.backbone.arch = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, grid=(8, 8))
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {id(p): g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    base = cfg.optim_wrapper.optimizer.lr
    enc = model.backbone.encoder
    assert lr_of[id(enc.pos_embed)] == pytest.approx(base * 0.75**13)
    assert lr_of[id(enc.blocks[5].attn.qkv.weight)] == pytest.approx(base * 0.75**7)
    assert all(lr_of[id(p)] == pytest.approx(base) for p in model.neck.parameters())
    assert all(lr_of[id(p)] == pytest.approx(base) for p in model.roi_head.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("source", ["project", "mae"])
def test_short_train_and_coco_eval_write_box_and_mask_ap(source, synthetic_coco, tmp_path):
    backbone = convert_source_layouts(tmp_path, img_size=128)[source]
    data = f"{synthetic_coco}/"
    result = run_tool(
        str(REPO / "tools/train.py"),
        str(TINY),
        "--backbone",
        str(backbone),
        "--work-dir",
        str(tmp_path / "work"),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        f"val_evaluator.ann_file={data}annotations/instances_val2017.json",
        "train_dataloader.num_workers=0",
        "val_dataloader.num_workers=0",
        "train_cfg.max_epochs=1",
        "train_cfg.val_interval=1",
        "default_hooks.checkpoint.interval=1",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "work/result.json").read_text())
    assert record["task"] == "coco"
    for kind in ("bbox", "segm"):
        for metric in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"):
            value = record["metrics"][f"coco/{kind}_{metric}"]
            assert value == -1.0 or 0.0 <= value <= 1.0  # -1: no objects of that size in the split
    assert record["backbone"]["source_format"] == {"project": "sdae-suite", "mae": "official-mae"}[source]
