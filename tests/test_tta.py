"""ADE20K multi-scale + flip test (tools/test.py --tta): the averaged prediction against
a hand computation from the segmentor on resized and flipped images, the one-pass
case against the plain test, the scales of every preset, and the tool end to end."""

import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import segmentation.engine  # noqa: F401
from pretrain.data.real_suite import write_real_suite
from suite.runner import prepare_backbone

from conftest import REPO, run_tool

LINEAR_REAL = REPO / "segmentation/configs/real/linear_vit-micro-p8_1xb4-2000it_realsuite-128x128.py"
UPERNET_REAL = REPO / "segmentation/configs/real/upernet_vit-micro-p8_1xb4-300it_realsuite-128x128.py"
RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
# config, its test short side (ratio 1) and crop: BEiT's ms test with SETR's minimum
PRESET_SCALES = {
    "upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py": (512, 512),
    "upernet_vit-b16_1xb2-accum8-amp-160k_ade20k-512x512.py": (512, 512),
    "upernet_vit-tiny-p16_1xb4-40it_synthetic-128x128.py": (128, 128),
    "real/upernet_vit-micro-p8_1xb4-300it_realsuite-128x128.py": (128, 128),
    "linear_vit-b16_8xb2-40k_ade20k-512x512.py": (512, 512),
    "linear_vit-tiny-p16_1xb4-40it_synthetic-128x128.py": (128, 128),
    "real/linear_vit-micro-p8_1xb4-2000it_realsuite-128x128.py": (128, 128),
}


def _test_tool():
    spec = importlib.util.spec_from_file_location("tools_test", REPO / "tools/test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def realsuite(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta_realsuite")
    write_real_suite(root, cls_per_class=(1, 1), seg_count=(4, 2), det_count=(1, 1))
    return root / "ade/ADEChallengeData2016"


@pytest.fixture(scope="module")
def micro_file(tmp_path_factory):
    return prepare_backbone("random:micro-p8", tmp_path_factory.mktemp("tta_backbone"))


def _tta_model_and_dataset(config, data, backbone, transforms=None):
    """The TTA model of ``config`` (random head with non-trivial BatchNorm statistics)
    and its test set with the TTA pipeline (``transforms`` replacing TestTimeAug's)."""
    init_default_scope("mmseg")
    cfg = Config.fromfile(config)
    cfg.model.backbone.checkpoint = str(backbone)
    cfg.test_dataloader.dataset.data_root = str(data)
    if transforms is not None:
        cfg.tta_pipeline[1].transforms = transforms
    plain_dataset = DATASETS.build(cfg.test_dataloader.dataset)
    _test_tool().apply_tta(cfg)
    torch.manual_seed(0)
    tta = revert_sync_batchnorm(MODELS.build(cfg.model))
    for module in tta.module.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return tta.eval(), DATASETS.build(cfg.test_dataloader.dataset), plain_dataset, cfg


@pytest.mark.slow
@pytest.mark.parametrize("config", [LINEAR_REAL, UPERNET_REAL], ids=["linear", "upernet"])
def test_tta_is_the_mean_softmax_over_scales_and_flips_computed_by_hand(config, realsuite, micro_file):
    tta, dataset, _, cfg = _tta_model_and_dataset(config, realsuite, micro_file)
    item = dataset[0]
    assert len(item["inputs"]) == 12
    with torch.no_grad():
        predicted = tta.test_step(pseudo_collate([item]))[0].pred_sem_seg.data[0]

    segmentor = tta.module
    bgr = cv2.imread(item["data_samples"][0].img_path, cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    assert h == w, "the hand computation below resizes square images"
    mean = torch.tensor(cfg.model.module.data_preprocessor.mean)[:, None, None]
    std = torch.tensor(cfg.model.module.data_preprocessor.std)[:, None, None]

    def normalise(image: np.ndarray) -> torch.Tensor:  # BGR uint8 -> normalised RGB batch of one
        rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float()
        return ((rgb - mean) / std)[None]

    probabilities = torch.zeros(1, segmentor.out_channels, h, w)
    with torch.no_grad():
        for ratio in RATIOS:
            side = max(int(128 * ratio), 128)  # BEiT / SETR: the short side never below the crop
            image = normalise(cv2.resize(bgr, (side, side), interpolation=cv2.INTER_LINEAR))
            for flip in (False, True):
                inputs = image.flip(-1) if flip else image
                logits = segmentor.inference(inputs, [dict(img_shape=(side, side), ori_shape=(h, w))])
                logits = logits.flip(-1) if flip else logits
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                probabilities += logits.softmax(dim=1)
    expected = (probabilities / 12).argmax(dim=1)[0]
    assert torch.equal(predicted, expected)
    with torch.no_grad():
        single = segmentor.inference(normalise(bgr), [dict(img_shape=(h, w), ori_shape=(h, w))]).argmax(1)[0]
    assert not torch.equal(single, expected)  # the augmentations change the prediction: the check can fail


def test_one_pass_without_flip_is_the_plain_test(realsuite, micro_file):
    one_pass = [
        [dict(type="ResizeShortestEdge", scale=128, max_size=2**31)],
        [dict(type="RandomFlip", prob=0.0, direction="horizontal")],
        [dict(type="LoadAnnotations", reduce_zero_label=True)],
        [dict(type="PackSegInputs")],
    ]
    tta, dataset, plain, _ = _tta_model_and_dataset(LINEAR_REAL, realsuite, micro_file, one_pass)
    with torch.no_grad():
        for i in range(len(dataset)):
            augmented = tta.test_step(pseudo_collate([dataset[i]]))[0]
            reference = tta.module.test_step(pseudo_collate([plain[i]]))[0]
            assert torch.equal(augmented.pred_sem_seg.data, reference.pred_sem_seg.data)
            assert torch.equal(augmented.gt_sem_seg.data, reference.gt_sem_seg.data)


@pytest.mark.parametrize("name", sorted(PRESET_SCALES))
def test_every_preset_tests_at_beits_scales_with_flip(name):
    side, crop = PRESET_SCALES[name]
    cfg = Config.fromfile(REPO / "segmentation/configs" / name)
    description = _test_tool().tta_description(cfg)
    assert [t["scale"] for t in description["resizes"]] == [max(int(side * r), crop) for r in RATIOS]
    assert description["flip"] and description["passes"] == 12 and cfg.tta_model.type == "SegTTAModel"


def test_tta_without_its_config_keys_names_them():
    path = REPO / "segmentation/configs/linear_vit-b16_8xb2-40k_ade20k-512x512.py"
    full = Config.fromfile(path).to_dict()
    cfg = Config({k: v for k, v in full.items() if k != "tta_model"}, filename=str(path))
    with pytest.raises(ValueError, match="--tta needs tta_model in the config"):
        _test_tool().apply_tta(cfg)


@pytest.mark.slow
def test_tools_test_tta_records_the_multi_scale_flip_miou(realsuite, micro_file, tmp_path):
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    data = [f"{loader}.dataset.data_root={realsuite}" for loader in loaders]
    schedule = ["train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.checkpoint.interval=4"]
    trained = run_tool(
        "tools/train.py", str(LINEAR_REAL), "--backbone", str(micro_file), "--work-dir", str(tmp_path / "train"),
        "--amp", "none", "--cfg-options", *data, *schedule,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    checkpoint = str(tmp_path / "train/iter_4.pth")
    tested = run_tool(
        "tools/test.py", str(LINEAR_REAL), checkpoint, "--backbone", str(micro_file), "--tta",
        "--work-dir", str(tmp_path / "tta"), "--cfg-options", data[2],
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    record = json.loads((tmp_path / "tta/result.json").read_text())
    assert (record["split"], record["checkpoint"], record["backbone"]["file"]) == ("test", checkpoint, str(micro_file))
    assert 0.0 <= record["metrics"]["mIoU"] <= 100.0
    assert (record["tta"]["ratios"], record["tta"]["flip"], record["tta"]["passes"]) == (RATIOS, True, 12)
    # one pass at ratio 1 without flip through --tta reproduces the validation of training
    one_pass = tmp_path / "one_pass.py"
    one_pass.write_text(
        f"_base_ = [{str(LINEAR_REAL)!r}]\n"
        "tta_ratios = [1.0]\n"
        "tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=["
        "[dict(type='ResizeShortestEdge', scale=128, max_size=2**31)], [dict(type='RandomFlip', prob=0.0)], "
        "[dict(type='LoadAnnotations', reduce_zero_label=True)], [dict(type='PackSegInputs')]])]\n"
    )
    tested = run_tool(
        "tools/test.py", str(one_pass), checkpoint, "--backbone", str(micro_file), "--tta",
        "--work-dir", str(tmp_path / "one"), "--cfg-options", data[2],
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    validated = json.loads((tmp_path / "train/result.json").read_text())["metrics"]
    record = json.loads((tmp_path / "one/result.json").read_text())
    assert record["metrics"] == validated and record["tta"]["passes"] == 1 and not record["tta"]["flip"]
