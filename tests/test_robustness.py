"""Robustness evaluation (classification/robustness.py, tools/eval_robustness.py) and
its mini sets (pretrain/data/robustness_sets.py): published class lists, the
IN-A/IN-R logit subsets, ImageNet-V2's index folders, the layout checks, mCE
against hand computations with AlexNet's published errors, and an end-to-end run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from classification.robustness import (
    ALEXNET_ERRORS,
    EXTRA_CORRUPTIONS,
    MCE_CORRUPTIONS,
    SETS,
    ClassMappingError,
    GroupScore,
    RobustnessLayoutError,
    class_subset,
    imagenet_wnids,
    mean_corruption_error,
    model_wnids,
    read_class_list,
    scan_corruption_folders,
    scan_index_folders,
    scan_wnid_folders,
    score_groups,
    set_metrics,
    top1_correct,
)

from conftest import REPO

# AlexNet's mean top-1 errors on ImageNet-C, typed here from ALEXNET_ERR of
# google-research/augmix imagenet.py ("taken from hendrycks/robustness"), in its order.
PUBLISHED_ALEXNET = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# Standard ImageNet-1k class indices (the torchvision / Keras label order).
KNOWN_INDICES = {
    0: "n01440764",  # tench
    2: "n01484850",  # great white shark
    10: "n01530575",  # brambling
    207: "n02099601",  # golden retriever
    281: "n02123045",  # tabby cat
    409: "n02708093",  # analog clock
    954: "n07753592",  # banana
    999: "n15075141",  # toilet tissue
}
FINETUNE = REPO / "classification/configs/real/vit-micro-p8_finetune_1xb128-20e_realsuite64.py"


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 120, 30)).save(path)


# --------------------------------------------------------------------------- published lists


def test_imagenet1k_wnids_are_the_standard_sorted_order():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids))
    assert list(wnids) == sorted(wnids)
    assert {i: wnids[i] for i in KNOWN_INDICES} == KNOWN_INDICES


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_the_two_published_forms_of_each_200_class_subset_agree(name):
    wnids = read_class_list(f"{name}_wnids.txt")
    indices = [int(i) for i in read_class_list(f"{name}_indices.txt")]
    assert len(wnids) == len(set(wnids)) == 200 and wnids == sorted(wnids)
    assert len(set(indices)) == 200 and indices == sorted(indices)
    # the wnid list and the integer list name the same classes through the 1000-wnid order
    assert [imagenet_wnids()[i] for i in indices] == wnids
    # and the logit subset of a 1000-class model is the authors' index list
    assert class_subset(SETS[name].classes(), imagenet_wnids()).logit_index == tuple(indices)


def test_in_a_indices_match_the_published_thousand_to_200_map_endpoints():
    # first and last entries of thousand_k_to_200 (hendrycks/natural-adv-examples eval.py)
    indices = [int(i) for i in read_class_list("imagenet_a_indices.txt")]
    assert indices[:5] == [6, 11, 13, 15, 17] and indices[-3:] == [986, 987, 988]


def test_alexnet_constants_are_the_published_ones():
    assert ALEXNET_ERRORS == PUBLISHED_ALEXNET
    assert len(MCE_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4


# --------------------------------------------------------------------------- metrics


def test_mce_against_hand_computations():
    at_alexnet = {c: dict.fromkeys(range(1, 6), e) for c, e in PUBLISHED_ALEXNET.items()}
    assert mean_corruption_error(at_alexnet) == pytest.approx(1.0)
    # gaussian noise errors 0.5..0.9, every other corruption error-free:
    # CE = (0.5 + 0.6 + 0.7 + 0.8 + 0.9) / (5 x 0.886428) = 3.5 / 4.43214
    only_noise = {c: dict.fromkeys(range(1, 6), 0.0) for c in PUBLISHED_ALEXNET}
    only_noise["gaussian_noise"] = {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8, 5: 0.9}
    assert mean_corruption_error(only_noise) == pytest.approx(3.5 / 4.43214 / 15)
    # brightness at twice AlexNet's error, the rest at AlexNet's: (14 x 1 + 2) / 15
    doubled = dict(at_alexnet, brightness=dict.fromkeys(range(1, 6), 2 * 0.564592))
    assert mean_corruption_error(doubled) == pytest.approx(16 / 15)


def test_imagenet_c_metrics_from_folder_scores():
    # 10 images per folder; folder (c, s) gets s correct for gaussian_noise, 10 for the others
    scores = {}
    for c in (*MCE_CORRUPTIONS, "spatter"):
        for s in range(1, 6):
            scores[f"{c}/{s}"] = GroupScore(samples=10, correct=s if c == "gaussian_noise" else 10)
    metrics = set_metrics("imagenet_c", scores)
    # gaussian noise errors 0.9, 0.8, 0.7, 0.6, 0.5 -> CE 3.5 / 4.43214; the rest error 0
    assert metrics["imagenet_c_ce/gaussian_noise"] == pytest.approx(100 * 3.5 / 4.43214)
    assert metrics["imagenet_c_mce"] == pytest.approx(100 * 3.5 / 4.43214 / 15)
    assert metrics["imagenet_c_err/gaussian_noise/2"] == pytest.approx(80.0)
    assert metrics["imagenet_c_err/spatter/1"] == 0.0 and "imagenet_c_ce/spatter" not in metrics
    # top-1 over the 75 mCE folders: (15 + 14 x 50) correct of 750
    assert metrics["imagenet_c_top1"] == pytest.approx(100 * (15 + 700) / 750)


def test_top1_is_taken_within_the_logit_subset():
    logits = torch.tensor([[0.0, 9.0, 1.0, 2.0], [5.0, 9.0, 1.0, 0.0]])
    # outputs 0, 2 and 3 are scored; output 1 (the overall argmax) is not
    labels = torch.tensor([2, 0])  # positions in the subset: output 3, output 0
    assert top1_correct(logits, labels, [0, 2, 3]) == 2
    assert top1_correct(logits, torch.tensor([1, 1]), [0, 2, 3]) == 0


# --------------------------------------------------------------------------- classes


def test_model_class_names_map_to_wnids_or_are_refused():
    assert model_wnids(["n01440764", "n15075141"]) == ["n01440764", "n15075141"]
    with pytest.raises(ClassMappingError, match=r"brick.*--class-map"):
        model_wnids(["brick", "n01440764"])
    with pytest.raises(ClassMappingError, match=r"no wnid for class.*grass"):
        model_wnids(["brick", "grass"], {"brick": "n01440764"})
    with pytest.raises(ClassMappingError, match=r"n99999999.*not ImageNet-1k"):
        model_wnids(["brick"], {"brick": "n99999999"})
    with pytest.raises(ClassMappingError, match="same wnid"):
        model_wnids(["brick", "grass"], {"brick": "n01440764", "grass": "n01440764"})
    assert model_wnids(["brick", "grass"], {"brick": "n15075141", "grass": "n01440764"}) == ["n15075141", "n01440764"]


class FixedLogits(torch.nn.Module):
    """Every image: output 1 highest, then output 2, then the rest."""

    def forward(self, x):
        logits = torch.zeros(len(x), 4)
        logits[:, 1], logits[:, 2] = 9.0, 5.0
        return logits


def test_a_small_model_is_scored_on_the_classes_it_shares_with_the_set(tmp_path):
    # model outputs: tench (0), brambling (1, not in ImageNet-A), stingray (2), goldfinch (3)
    outputs = ["n01440764", "n01530575", "n01498041", "n01531178"]
    subset = class_subset(SETS["imagenet_a"].classes(), outputs)
    assert subset.wnids == ("n01498041", "n01531178") and subset.logit_index == (2, 3) and subset.listed == 200
    folder = tmp_path / "imagenet-a"
    for wnid, count in (("n01498041", 3), ("n01531178", 2), ("n01614925", 4)):  # bald eagle: no such output
        for i in range(count):
            _image(folder / wnid / f"{i}.jpg")
    samples = scan_wnid_folders(folder, SETS["imagenet_a"].classes(), "ImageNet-A")
    to_tensor = lambda img: torch.zeros(3, 4, 4)  # noqa: E731
    (score,) = score_groups(FixedLogits(), {"all": samples}, subset, to_tensor, batch_size=4).values()
    # within outputs (2, 3) every image is called stingray: the 3 stingrays are right
    assert (score.samples, score.correct, score.skipped) == (5, 3, 4)
    assert score.top1 == pytest.approx(60.0)


# --------------------------------------------------------------------------- layouts


def test_v2_folders_are_class_indices_not_string_sorted_labels(tmp_path):
    folder = tmp_path / "imagenetv2-matched-frequency-format-val"
    for index in ("0", "10", "2", "999"):
        _image(folder / index / "a.jpeg")
    wnids = {path.parent.name: wnid for path, wnid in scan_index_folders(folder, "ImageNet-V2")}
    assert wnids == {str(i): KNOWN_INDICES[i] for i in (0, 2, 10, 999)}
    _image(folder / "n01440764" / "a.jpeg")
    with pytest.raises(RobustnessLayoutError, match=r"class index.*n01440764"):
        scan_index_folders(folder, "ImageNet-V2")


def test_a_class_folder_outside_the_published_list_is_refused(tmp_path):
    folder = tmp_path / "imagenet-a"
    _image(folder / "n01498041" / "a.jpg")
    (folder / "README.txt").write_text("the release's class list\n")  # files beside the folders are fine
    assert len(scan_wnid_folders(folder, SETS["imagenet_a"].classes(), "ImageNet-A")) == 1
    _image(folder / "n01440764" / "a.jpg")  # tench is not one of ImageNet-A's classes
    with pytest.raises(RobustnessLayoutError, match=r"ImageNet-A's 200 classes \(n01440764\)"):
        scan_wnid_folders(folder, SETS["imagenet_a"].classes(), "ImageNet-A")


def _imagenet_c(root: Path, corruptions) -> Path:
    for c in corruptions:
        for s in range(1, 6):
            _image(root / c / str(s) / "n01440764" / "a.JPEG")
    return root


def test_imagenet_c_layout_checks(tmp_path):
    good = _imagenet_c(tmp_path / "good", MCE_CORRUPTIONS)
    scanned = scan_corruption_folders(good)
    assert sorted(scanned) == sorted(MCE_CORRUPTIONS) and all(sorted(v) == [1, 2, 3, 4, 5] for v in scanned.values())
    missing_severity = _imagenet_c(tmp_path / "sev", MCE_CORRUPTIONS)
    shutil.rmtree(missing_severity / "fog" / "4")
    with pytest.raises(RobustnessLayoutError, match=r"fog must hold exactly the severity folders 1\.\.5; missing: 4"):
        scan_corruption_folders(missing_severity)
    lacking = _imagenet_c(tmp_path / "lacking", [c for c in MCE_CORRUPTIONS if c != "contrast"])
    with pytest.raises(RobustnessLayoutError, match=r"lacks 1 of the 15 corruptions.*contrast"):
        scan_corruption_folders(lacking)
    by_category = _imagenet_c(tmp_path / "category", [f"noise/{c}" for c in ("gaussian_noise",)])
    with pytest.raises(RobustnessLayoutError, match=r"noise.*unpack them all into this one folder"):
        scan_corruption_folders(by_category)


# --------------------------------------------------------------------------- mini sets, end to end


@pytest.fixture(scope="module")
def mini_sets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robustness")
    run = [sys.executable, str(REPO / "tools/generate_datasets.py")]
    subprocess.run([*run, "realsuite", str(root / "realsuite")], check=True, capture_output=True, cwd=REPO)
    out = subprocess.run(
        [*run, "robustness", str(root / "sets"), "--imagenet", str(root / "realsuite/imagenet")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root


@pytest.mark.slow
def test_mini_sets_have_the_official_layouts_and_only_val_pixels(mini_sets):
    sets, val = mini_sets / "sets", mini_sets / "realsuite/imagenet/val"
    class_map = json.loads((sets / "class_map.json").read_text())
    assert sorted(class_map) == sorted(p.name for p in val.iterdir())
    in_a = {w for w in class_map.values() if w in read_class_list("imagenet_a_wnids.txt")}
    in_r = {w for w in class_map.values() if w in read_class_list("imagenet_r_wnids.txt")}
    assert len(in_a) == len(in_r) == 4 and len(in_a | in_r) == 6  # each subset is partial: the masks matter
    assert {p.name for p in (sets / "imagenet-a").iterdir() if p.is_dir()} == in_a
    assert {p.name for p in (sets / "imagenet-r").iterdir() if p.is_dir()} == in_r
    v2 = sets / "imagenetv2-matched-frequency-format-val"
    assert {p.name for p in v2.iterdir()} == {str(imagenet_wnids().index(w)) for w in class_map.values()}
    corruptions = {p.name for p in (sets / "imagenet-c").iterdir()}
    assert corruptions == {*MCE_CORRUPTIONS, *EXTRA_CORRUPTIONS}
    # every written image is named after a validation image of its class
    material = {w: name for name, w in class_map.items()}
    for path in sets.rglob("*"):
        if path.suffix.lower() in (".jpg", ".jpeg"):
            wnid = path.parent.name if path.parent.name.startswith("n") else imagenet_wnids()[int(path.parent.name)]
            assert (val / material[wnid] / f"{path.stem}.png").is_file(), path


def _classifier_checkpoint(tmp: Path) -> tuple[Path, Path]:
    """A checkpoint in tools/train.py's format for the real fine-tune config: the model's
    state dict and meta.dataset_meta with the training set's (material) class names."""
    from mmengine.registry import MODELS

    import classification.engine  # noqa: F401
    from pretrain.engine.runtime import prepare_config
    from suite.runner import prepare_backbone

    backbone = prepare_backbone("random:micro-p8", tmp)
    cfg, _ = prepare_config(str(FINETUNE), str(tmp / "wd"), False, "none", {}, "none", str(backbone))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    classes = ("brick", "cell", "grass", "gravel", "hubble", "ihc", "moon", "text")
    path = tmp / "finetuned.pth"
    torch.save(
        {"meta": {"dataset_meta": {"classes": classes, "split": "train"}}, "state_dict": model.state_dict()}, path
    )
    return path, backbone


@pytest.mark.slow
def test_eval_robustness_on_the_mini_sets_writes_a_record(mini_sets, tmp_path):
    checkpoint, backbone = _classifier_checkpoint(tmp_path)
    sets = mini_sets / "sets"
    command = [
        sys.executable, str(REPO / "tools/eval_robustness.py"), str(FINETUNE), str(checkpoint),
        "--data-root", str(sets), "--class-map", str(sets / "class_map.json"), "--backbone", str(backbone),
        "--work-dir", str(tmp_path / "eval"),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    record = json.loads((tmp_path / "eval/result.json").read_text())
    assert record["task"] == "robustness" and record["split"] == "test" and record["checkpoint"] == str(checkpoint)
    metrics = record["metrics"]
    for key in ("imagenet_a_top1", "imagenet_r_top1", "sketch_top1", "v2_top1", "imagenet_c_top1"):
        assert 0.0 <= metrics[key] <= 100.0
    assert record["sets"]["imagenet_a"] | {"folder": None} == {
        "folder": None, "images": 20, "images_skipped": 0, "classes_listed": 200, "classes_scored": 4,
        "images_per_group": None,
    }  # fmt: skip
    assert record["sets"]["sketch"]["classes_scored"] == 8 and record["sets"]["imagenet_c"]["images"] == 19 * 5 * 16
    # mCE recomputed here from the recorded per-severity errors and the published AlexNet errors
    ce = [
        sum(metrics[f"imagenet_c_err/{c}/{s}"] for s in range(1, 6)) / (5 * PUBLISHED_ALEXNET[c])
        for c in PUBLISHED_ALEXNET
    ]
    assert metrics["imagenet_c_mce"] == pytest.approx(sum(ce) / 15)
    assert record["backbone"]["file"] == str(backbone)


@pytest.mark.slow
def test_eval_robustness_refuses_unmapped_classes_and_missing_sets(mini_sets, tmp_path):
    checkpoint, backbone = _classifier_checkpoint(tmp_path)
    sets = mini_sets / "sets"
    command = [
        sys.executable, str(REPO / "tools/eval_robustness.py"), str(FINETUNE), str(checkpoint),
        "--data-root", str(sets), "--class-map", str(sets / "class_map.json"), "--backbone", str(backbone),
        "--work-dir", str(tmp_path / "eval"),
    ]  # fmt: skip
    # without the class map, the material names are refused by name
    run = subprocess.run(command[:6] + command[8:], capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "brick" in run.stderr and "--class-map" in run.stderr
    # a set that is asked for (all, by default) and missing is an error pointing to --sets
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("imagenet-a", "imagenet-r"):
        (partial / name).symlink_to(sets / name)
    command[5] = str(partial)
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "ImageNet-Sketch not found" in run.stderr and "--sets" in run.stderr
    run = subprocess.run([*command, "--sets", "imagenet_a,imagenet_r"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert set(json.loads((tmp_path / "eval/result.json").read_text())["sets"]) == {"imagenet_a", "imagenet_r"}
