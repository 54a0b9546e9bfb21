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
    # data, pipelines, heads' structure, losses, sampling and evaluation are the preset's
    assert changed == {
        "model.backbone",
        "model.neck",
        "model.rpn_head",
        "model.roi_head",
        "strides",
        "optim_wrapper",
        "max_epochs",
        "param_scheduler",
        "train_cfg",
        "default_hooks",
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
    with pytest.raises(FileNotFoundError, match="backbone mine: no file"):
        study.run(tmp_path, [0], backbones={"mine": tmp_path / "missing.safetensors"})
    assert not (tmp_path / "data").exists()
    result = run_tool(str(REPO / "tools/benchmark_detection_learnability.py"), "--backbone", "nofile")
    assert result.returncode != 0 and "expected NAME=FILE.safetensors, got 'nofile'" in result.stderr


@pytest.mark.slow
def test_benchmark_end_to_end_on_a_small_suite(tmp_path):
    messages = []
    # 3 epochs: the shortest stretch of the reference (step at 12 of 16) with its step inside the run
    result = study.run(tmp_path, [0], epochs=3, say=messages.append, data_args=SMALL)
    names = [r["name"] for r in result["records"]]
    assert names == [study.REFERENCE, study.VIT_CONTROL]
    for record in result["records"]:
        assert 0.0 <= record["box_ap"] <= 100.0 and 0.0 <= record["mask_ap"] <= 100.0
        assert "--epochs 3" in record["reproduce"]
        assert json.loads((tmp_path / "runs" / record["name"] / "seed0" / "result.json").read_text())["epoch"] == 3
    vit = result["records"][1]
    assert "--backbone" in vit["command"] and "--backbone" not in result["records"][0]["command"]
    table = study.markdown_table(result)
    assert "ResNet-18 FPN, from scratch (reference)" in table and "ViT-micro/8, random init (control)" in table
    # a rerun with the same settings reads the records instead of training
    messages.clear()
    again = study.run(tmp_path, [0], epochs=3, say=messages.append, data_args=SMALL)
    assert again["records"] == result["records"]
    assert sum("recorded already" in m for m in messages) == 2
