"""The small-scale reproduction: real-image datasets, its evaluation pieces and
the benchmark script end to end (one seed, a shortened schedule)."""

import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.data.checks import check_dataset
from pretrain.data.folders import list_images
from pretrain.data.real import write_real_datasets

from conftest import REPO, run_tool, timm_vit_like

SMALL = dict(photo_crops_count=32, texture_train_per_class=6, texture_val_per_class=3)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "data"
    write_real_datasets(root, seed=0, **SMALL)
    return root


def test_real_datasets_layout_counts_and_splits(real_data):
    recipe = json.loads((real_data / "recipe.json").read_text())
    for name, classes in (("digits", 10), ("textures", 3), ("faces", 2)):
        report = check_dataset(real_data / name, "imagenet", ["train", "val"])
        assert report.ok, report
        assert len([d for d in (real_data / name / "train").iterdir() if d.is_dir()]) == classes
    # scikit-learn ships 1,797 digits and scikit-image 100 faces + 100 non-faces
    assert recipe["counts"]["digits"]["train"] + recipe["counts"]["digits"]["val"] == 1797
    assert recipe["counts"]["faces"] == {"train": 140, "val": 60}
    assert recipe["counts"]["textures"] == {"train": 18, "val": 9}
    # stratified: every digit class keeps 80% (rounded) of its images for training
    for digit in range(10):
        train = len(list_images(real_data / "digits" / "train" / str(digit)))
        val = len(list_images(real_data / "digits" / "val" / str(digit)))
        assert train == round(0.8 * (train + val))
    # pretraining sees the photo crops and the labelled train splits, never a validation image
    pretrain = {_digest(p) for p in list_images(real_data / "pretrain" / "train")}
    assert len(list_images(real_data / "pretrain" / "train")) == recipe["counts"]["pretrain"]["train"]
    for name in ("digits", "textures", "faces"):
        train = {_digest(p) for p in list_images(real_data / name / "train")}
        assert train <= pretrain
        val = [p for p in list_images(real_data / name / "val") if _digest(p) in pretrain]
        assert not val, f"validation images of {name} leak into pretraining: {val[:3]}"


def test_real_datasets_are_deterministic_and_refuse_mixing(real_data, tmp_path):
    again = tmp_path / "again"
    write_real_datasets(again, seed=0, **SMALL)
    assert _tree(again) == _tree(real_data)
    other = tmp_path / "other"
    write_real_datasets(other, seed=1, **SMALL)
    assert _tree(other) != _tree(real_data)
    with pytest.raises(FileExistsError, match="built with"):
        write_real_datasets(again, seed=1, **SMALL)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError, match=r"no recipe\.json"):
        write_real_datasets(tmp_path / "busy", seed=0, **SMALL)


def test_probe_features_are_timm_class_token(tmp_path, real_data):
    """The linear probe's feature is timm's class token after the final norm."""
    from classification.data import ImageNetClassification
    from classification.models import build_backbone
    from pretrain.checkpoints import CanonicalBackbone, save_backbone
    from pretrain.checkpoints.convert import infer_arch
    from pretrain.models import build_vit
    from studies.reproduction import extract_features

    torch.manual_seed(0)
    vit = build_vit("micro", img_size=32, pos_embed="learned")
    path = tmp_path / "micro.safetensors"
    save_backbone(path, CanonicalBackbone(vit.state_dict(), infer_arch(vit.state_dict())))
    encoder, _ = build_backbone(str(path), img_size=32)
    cls, avg, labels = extract_features(encoder, real_data / "faces", "val")
    dataset = ImageNetClassification(str(real_data / "faces"), "val", transform="eval", img_size=32)
    images = torch.stack([dataset[i]["inputs"] for i in range(len(dataset))])
    with torch.no_grad():
        tokens = timm_vit_like(vit).forward_features(images)
    torch.testing.assert_close(torch.from_numpy(cls), tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(avg), tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    assert labels.tolist() == [dataset.samples[i][1] for i in range(len(dataset))]


def test_logistic_probe_separates_separable_data_and_not_noise():
    from studies.reproduction import logistic_probe

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    centres = rng.normal(size=(3, 16)) * 4
    x = centres[labels] + rng.normal(size=(300, 16))
    assert logistic_probe(x[:200], labels[:200], x[200:], labels[200:]) > 95
    noise = rng.normal(size=(300, 16))
    assert logistic_probe(noise[:200], labels[:200], noise[200:], labels[200:]) < 60


def test_summary_mean_and_sample_std():
    from studies.reproduction import csv_table, markdown_table, summarise

    records = [
        dict(variant="mae", seed=s, linear_digits=v, finetune_digits=50.0 + s, pretrain_s=10.0, final_loss=0.5)
        for s, v in enumerate([90.0, 92.0, 97.0])
    ]
    records.append(dict(variant="random-init", seed=0, linear_digits=80.0, finetune_digits=40.0, pretrain_s=0.0))
    rows = summarise(records, ["random-init", "mae", "full-image"])
    assert [r["variant"] for r in rows] == ["random-init", "mae"]  # no runs, no row
    mae = rows[1]["linear_digits"]
    assert mae["mean"] == pytest.approx(93.0)
    assert mae["std"] == pytest.approx(float(np.std([90.0, 92.0, 97.0], ddof=1)))
    assert mae["n"] == 3 and rows[1]["seeds"] == [0, 1, 2]
    assert rows[0]["linear_digits"] == {"mean": 80.0, "std": 0.0, "n": 1}
    assert "linear_textures" not in rows[1]
    table = markdown_table(rows)
    assert f"93.0 ± {statistics.stdev([90.0, 92.0, 97.0]):.1f}" in table
    assert len(table.splitlines()) == 2 + len(rows)
    assert csv_table(rows).splitlines()[2].startswith("mae,0 1 2,93.0000,")


@pytest.mark.slow
def test_benchmark_end_to_end_and_rerun(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    args = [
        "tools/benchmark_reproduction.py",
        "--out", str(out),
        "--data", str(data),
        "--seeds", "0",
        "--variants", "random-init", "mae", "multi-fold-2",
        "--photo-crops", "32",
        "--pretrain-options", "train_cfg.max_epochs=1",
        "--finetune-options", "train_cfg.max_epochs=1",
    ]  # fmt: skip
    first = run_tool(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["random-init", "mae", "multi-fold-2"]
    by_name = {r["variant"]: r for r in results["records"]}
    assert by_name["random-init"]["steps"] == 0
    assert by_name["mae"]["steps"] == by_name["multi-fold-2"]["steps"] > 0  # one budget
    assert by_name["multi-fold-2"]["teacher_student_distance"] > 0
    assert by_name["multi-fold-2"]["teacher_norm_affine_dev"] >= 0
    assert "teacher_student_distance" not in by_name["mae"]
    for record in results["records"]:
        for key in ("linear_digits", "linear_textures", "linear_faces", "finetune_digits"):
            assert 0.0 <= record[key] <= 100.0
        assert Path(record["backbone"]).is_file()
    # the fine-tune read the backbone it was given (its result records the file's weights hash)
    finetune = json.loads((out / "work/mae/seed0/finetune/result.json").read_text())
    from pretrain.checkpoints import read_backbone

    assert (
        finetune["backbone"]["weights_sha256"] == read_backbone(by_name["mae"]["backbone"]).metadata["weights_sha256"]
    )
    assert (out / "plot.png").stat().st_size > 10_000
    assert "SdAE, multi-fold t=2" in (out / "table.md").read_text()
    # a rerun reuses every record; other settings run again
    second = run_tool(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("recorded, skipped") == 3
    wrong = run_tool(*args[:5], "--data-seed", "1", "--seeds", "0", "--variants", "random-init")
    assert wrong.returncode != 0 and "built with" in wrong.stderr + wrong.stdout


def test_benchmark_rejects_unknown_variant():
    result = run_tool(str(REPO / "tools/benchmark_reproduction.py"), "--variants", "mea")
    assert result.returncode != 0 and "invalid choice: 'mea'" in result.stderr


def test_set_epochs_stretches_the_schedule():
    from mmengine.config import Config

    from studies.reproduction import PRETRAIN_CONFIGS, set_epochs

    cfg = Config.fromfile(str(PRETRAIN_CONFIGS["sdae"]))
    assert cfg.train_cfg.max_epochs == 6
    set_epochs(cfg, 30)
    warmup, cosine = cfg.param_scheduler
    assert cfg.train_cfg.max_epochs == 30 and (warmup.begin, warmup.end) == (0, 1)
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, 30, 29)
    with pytest.raises(ValueError, match="no room"):
        set_epochs(Config.fromfile(str(PRETRAIN_CONFIGS["sdae"])), 1)


def test_set_epochs_moves_step_milestones_with_the_run():
    # the CAE 1x recipe steps at epochs 9 and 11 of 12; a 4-epoch run stretched to 16
    # that kept its step at 3 would train 13 of 16 epochs at a tenth of the rate
    from mmengine.config import Config

    from pretrain.engine.runtime import set_epochs

    cfg = Config.fromfile(str(REPO / "detection/configs/mask-rcnn_vit-b16_fpn_8xb2-accum2-amp-1x_coco.py"))
    steps = next(s for s in cfg.param_scheduler if s.type == "MultiStepLR")
    assert (steps.end, steps.milestones) == (12, [9, 11])
    set_epochs(cfg, 24)
    assert (steps.end, steps.milestones) == (24, [18, 22])
    set_epochs(cfg, 12)
    assert steps.milestones == [9, 11]
    with pytest.raises(ValueError, match=r"too few for the steps at epochs \[9, 11\]"):
        set_epochs(cfg, 3)


def test_teacher_diagnostics(tmp_path):
    from studies.reproduction import teacher_diagnostics

    torch.manual_seed(0)
    student = {"norm.weight": torch.ones(4), "norm.bias": torch.zeros(4), "w": torch.randn(4, 4)}
    teacher = {"norm.weight": torch.tensor([1.0, 1.5, 1.0, 1.0]), "norm.bias": torch.tensor([0, 0, -0.2, 0])}
    teacher["w"] = student["w"] + 0.1
    state = {f"sdae.student.{k}": v for k, v in student.items()} | {f"sdae.teacher.{k}": v for k, v in teacher.items()}
    torch.save({"state_dict": state}, tmp_path / "ckpt.pth")
    found = teacher_diagnostics(tmp_path / "ckpt.pth")
    diff = sum(float((teacher[k] - student[k]).pow(2).sum()) for k in student)
    norm = sum(float(v.pow(2).sum()) for v in student.values())
    assert found["teacher_student_distance"] == pytest.approx((diff / norm) ** 0.5)
    assert found["teacher_norm_affine_dev"] == pytest.approx(0.5)
    torch.save({"state_dict": {f"sdae.student.{k}": v for k, v in student.items()}}, tmp_path / "mae.pth")
    assert teacher_diagnostics(tmp_path / "mae.pth") == {}


def test_random_init_control_is_the_start_of_every_pretraining_run(tmp_path, real_data):
    """Seed k's control equals the student that seed k's MAE and SdAE runs start from."""
    from pretrain.checkpoints import read_backbone
    from studies.reproduction import PRETRAIN_CONFIGS, VARIANTS, pretrain

    from conftest import build_runner

    data = real_data / "pretrain"
    control = pretrain(VARIANTS["random-init"], 3, data, tmp_path / "control", {})
    weights = read_backbone(control["backbone"]).state_dict
    options = {"randomness.seed": 3, "train_dataloader.dataset.data_root": str(data)}
    for name, config in PRETRAIN_CONFIGS.items():
        runner = build_runner(config, tmp_path / name, options, resume=False)
        student = runner.model.sdae.student.state_dict()
        assert student.keys() == weights.keys()
        for key, value in student.items():
            assert torch.equal(value, weights[key]), f"{name}: {key} differs from the control"
    other = pretrain(VARIANTS["random-init"], 4, data, tmp_path / "control4", {})
    assert not torch.equal(read_backbone(other["backbone"]).state_dict["cls_token"], weights["cls_token"])
