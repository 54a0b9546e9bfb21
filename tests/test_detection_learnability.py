"""The detection learnability study: its reference detector is the real preset's
Mask R-CNN with only the backbone (and what follows from its strides) and the
optimiser swapped, and the benchmark runs end to end on a small real suite."""

import json

import pytest
from mmengine.config import Config
from test_real_suite import SMALL, config_differences

from studies import detection_learnability as study

from conftest import REPO, run_tool


def test_reference_is_the_real_preset_detector_with_a_resnet():
    preset = Config.fromfile(str(study.VIT_CONFIG))
    reference = Config.fromfile(str(study.REFERENCE_CONFIG))
    changed = {
        k.split(".")[0] if not k.startswith("model.") else ".".join(k.split(".")[:2])
        for k in config_differences(preset, reference)
    }
    # data, pipelines, heads' structure, losses, sampling, schedule and evaluation are the preset's
    assert changed == {
        "model.backbone",
        "model.neck",
        "model.rpn_head",
        "model.roi_head",
        "strides",
        "optim_wrapper",
    }
    differences = config_differences(preset, reference)
    assert [k for k in differences if k.startswith(("model.rpn_head", "model.roi_head", "model.neck"))] == [
        "model.neck.in_channels",
        "model.roi_head.bbox_roi_extractor.featmap_strides",
        "model.roi_head.bbox_roi_extractor.finest_scale",
        "model.roi_head.mask_roi_extractor.featmap_strides",
        "model.roi_head.mask_roi_extractor.finest_scale",
        "model.rpn_head.anchor_generator.strides",
    ]
    assert reference.model.backbone.type == "mmdet.ResNet" and reference.model.backbone.init_cfg is None
    assert reference.train_dataloader == preset.train_dataloader and reference.val_evaluator == preset.val_evaluator


def test_bad_backbones_are_refused_before_any_training(tmp_path):
    with pytest.raises(ValueError, match=r"\['resnet18-scratch'\] are taken"):
        study.run(tmp_path, [0], backbones={"resnet18-scratch": tmp_path / "x.safetensors"})
    with pytest.raises(ValueError, match=r"\['vit-random-init'\] are taken"):
        study.run(tmp_path, [0], variants={"vit-random-init": ("model.neck.norm_cfg.type=GN",)})
    with pytest.raises(ValueError, match=r"variant gn: expected KEY=VALUE cfg-options, got \['GN'\]"):
        study.run(tmp_path, [0], variants={"gn": ("GN",)})
    with pytest.raises(ValueError, match=r"\['x'\] name both a backbone and a variant"):
        study.run(tmp_path, [0], backbones={"x": tmp_path / "x.safetensors"}, variants={"x": ("a=1",)})
    with pytest.raises(FileNotFoundError, match="backbone mine: no file"):
        study.run(tmp_path, [0], backbones={"mine": tmp_path / "missing.safetensors"})
    assert not (tmp_path / "data").exists()
    result = run_tool(str(REPO / "tools/benchmark_detection_learnability.py"), "--backbone", "nofile")
    assert result.returncode != 0 and "expected NAME=FILE.safetensors, got 'nofile'" in result.stderr


@pytest.mark.slow
def test_benchmark_end_to_end_on_a_small_suite(tmp_path):
    messages = []
    # 3 epochs: the shortest stretch of the preset (step at 3 of 4) with its step inside the run
    gn = ("model.neck.norm_cfg.type=GN", "model.neck.norm_cfg.num_groups=8")
    result = study.run(tmp_path, [0], epochs=3, variants={"gn-fpn": gn}, say=messages.append, data_args=SMALL)
    names = [r["name"] for r in result["records"]]
    assert names == [study.REFERENCE, study.VIT_CONTROL, "gn-fpn"]
    for record in result["records"]:
        assert 0.0 <= record["box_ap"] <= 100.0 and 0.0 <= record["mask_ap"] <= 100.0
        # one scale per backbone output (4) and per FPN output (5), measured on the trained weights
        assert len(record["scales"]["backbone"]) == 4 and len(record["scales"]["neck"]) == 5
        assert record["fpn_std"] == max(record["scales"]["neck"]) > 0
        assert "--epochs 3" in record["reproduce"]
        assert json.loads((tmp_path / "runs" / record["name"] / "seed0" / "result.json").read_text())["epoch"] == 3
    vit, variant = result["records"][1:]
    assert "--backbone" in vit["command"] and "--backbone" not in result["records"][0]["command"]
    assert variant["command"][-2:] == list(gn) and not set(gn) & set(vit["command"])
    dumped = Config.fromfile(str(next((tmp_path / "runs/gn-fpn/seed0").glob("*.py"))))
    assert dumped.model.neck.norm_cfg == dict(type="GN", num_groups=8)
    # the variant trained a different detector from the same starting point
    assert variant["scales"] != vit["scales"]
    table = study.markdown_table(result)
    assert "ResNet-18 FPN, from scratch (reference)" in table and "ViT-micro/8, random init (control)" in table
    # a rerun with the same settings reads the records instead of training
    messages.clear()
    again = study.run(tmp_path, [0], epochs=3, variants={"gn-fpn": gn}, say=messages.append, data_args=SMALL)
    assert again["records"] == result["records"]
    assert sum("recorded already" in m for m in messages) == 3


def test_pyramid_scales_follow_the_fpn_outputs(tmp_path):
    """The measured scales are those of the maps the heads read: scaling the FPN's output
    convs by 10 scales every FPN level's std by 10 (the extra level is a max-pool of the
    last) and leaves the backbone's untouched."""
    import torch
    from mmdet.registry import MODELS

    import detection.engine  # noqa: F401
    from detection.diagnostics import pyramid_scales
    from pretrain.data.real_suite import write_real_suite
    from suite.runner import prepare_backbone

    write_real_suite(tmp_path / "data", **SMALL)
    config = Config.fromfile(str(study.VIT_CONFIG))
    config.model.backbone.checkpoint = str(prepare_backbone("random:micro-p8", tmp_path))
    config_file = tmp_path / "detector.py"
    config.dump(str(config_file))
    detector = MODELS.build(config.model)
    images = sorted((tmp_path / "data/coco/val2017").glob("*.jpg"))[:3]

    def measured(scale: float) -> dict:
        state = {k: v * scale if k.startswith("neck.fpn_convs.") else v for k, v in detector.state_dict().items()}
        torch.save({"state_dict": state}, tmp_path / "detector.pth")
        return pyramid_scales(config_file, tmp_path / "detector.pth", images)

    plain, scaled = measured(1.0), measured(10.0)
    assert len(plain["backbone"]) == 4 and len(plain["neck"]) == 5
    assert scaled["backbone"] == plain["backbone"]
    assert scaled["neck"] == pytest.approx([10 * s for s in plain["neck"]], rel=1e-3)
    with pytest.raises(ValueError, match="at least one image"):
        pyramid_scales(config_file, tmp_path / "detector.pth", [])
