"""Dataset defects that would make training wrong or crash without naming the file:
each is refused by the dataset the real config builds (before training, where it can
be checked then) with a message naming the file, and `tools/check_dataset.py`
exits non-zero on it."""

import json
import os
import re
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

import classification.engine  # noqa: F401
import detection.engine  # noqa: F401
import segmentation.engine  # noqa: F401
from pretrain.data import ImageFolderError, UnreadableImageError
from pretrain.data.checks import DatasetDefectError, DatasetSampleError, check_dataset
from pretrain.data.synthetic import write_ade20k_like, write_coco_like, write_imagenet_like

from conftest import REPO, TINY_CONFIG, run_tool

CLASSIFICATION = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"
SEGMENTATION = REPO / "segmentation/configs/upernet_vit-tiny-p16_1xb4-40it_synthetic-128x128.py"
DETECTION = REPO / "detection/configs/mask-rcnn_vit-tiny-p16_fpn_1xb2-2e_synthetic.py"


def build_dataset(config: Path, loader: str, data_root: Path, scope: str = "mmengine"):
    """The dataset of ``loader`` (e.g. ``train_dataloader``) of ``config`` as the Runner builds it."""
    from mmengine.registry import DATASETS

    cfg = Config.fromfile(str(config))
    dataset = cfg[loader].dataset
    dataset.data_root = str(data_root)
    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(dataset)


def small_imagenet(root: Path) -> Path:
    write_imagenet_like(root, num_classes=3, train_per_class=2, val_per_class=1, image_size=32)
    return root


def check_tool(layout: str, root: Path):
    return run_tool("tools/check_dataset.py", layout, str(root), "--workers", "1", timeout=120)


# --------------------------------------------------------------------------- ImageNet-layout class folders


def test_class_missing_from_val_is_refused_naming_the_folder(tmp_path):
    root = small_imagenet(tmp_path / "imagenet")
    train = build_dataset(CLASSIFICATION, "train_dataloader", root)
    val = build_dataset(CLASSIFICATION, "val_dataloader", root)
    assert train.classes == val.classes and len(val) == 3
    dropped = sorted((root / "val").iterdir())[1]  # the middle class: the last class's label would shift
    for image in dropped.iterdir():
        image.unlink()
    dropped.rmdir()
    in_train = root / "train" / dropped.name
    expected = re.escape(f"{in_train}: class not present in 'val'")
    for loader in ("train_dataloader", "val_dataloader"):
        with pytest.raises(ImageFolderError, match=expected):
            build_dataset(CLASSIFICATION, loader, root)
    result = check_tool("imagenet", root)
    assert result.returncode == 1, result.stdout
    assert f"{in_train}: class not present in 'val'" in result.stdout


def test_empty_class_folder_in_train_is_refused_naming_the_folder(tmp_path):
    root = small_imagenet(tmp_path / "imagenet")
    empty = root / "train" / "n00000000"  # sorts first: every other class's train label would shift by one
    empty.mkdir()
    with pytest.raises(ImageFolderError, match=re.escape(f"{empty}: class folder without images")):
        build_dataset(CLASSIFICATION, "train_dataloader", root)
    with pytest.raises(ImageFolderError, match=re.escape(f"{empty}: class not present in 'val'")):
        build_dataset(CLASSIFICATION, "val_dataloader", root)
    report = check_dataset(root, workers=1)
    assert not report.ok and f"{empty}: class folder without images" in report.layout
    # pretraining ignores labels: an empty folder loses nothing there
    assert len(build_dataset(TINY_CONFIG, "train_dataloader", root)) == 6


# --------------------------------------------------------------------------- symlink loops


def test_symlink_loop_is_refused_naming_the_link(tmp_path):
    root = small_imagenet(tmp_path / "imagenet")
    assert len(build_dataset(TINY_CONFIG, "train_dataloader", root)) == 6
    class_dir = sorted((root / "train").iterdir())[0]
    link = class_dir / "again"
    os.symlink(class_dir, link)  # the class folder holds a link to itself
    expected = re.escape(f"symlink loop: {link} points to {class_dir}")
    with pytest.raises(ImageFolderError, match=expected):
        build_dataset(TINY_CONFIG, "train_dataloader", root)
    with pytest.raises(ImageFolderError, match=expected):
        build_dataset(CLASSIFICATION, "train_dataloader", root)
    assert any(p.startswith(f"symlink loop: {link}") for p in check_dataset(root, workers=1).layout)
    result = check_tool("folder", root / "train")
    assert result.returncode == 1, result.stdout
    assert f"symlink loop: {link} points to {class_dir}" in result.stdout


def test_two_links_to_one_folder_are_refused(tmp_path):
    root = small_imagenet(tmp_path / "imagenet")
    classes = sorted((root / "train").iterdir())
    os.symlink(classes[2], classes[0] / "copy")  # class 2's images would be listed twice
    with pytest.raises(ImageFolderError, match=re.escape(f"are the same folder {classes[2]}")):
        build_dataset(TINY_CONFIG, "train_dataloader", root)


# --------------------------------------------------------------------------- ADE20K label maps


@pytest.fixture
def ade_root(tmp_path) -> Path:
    write_ade20k_like(tmp_path / "ade", num_train=3, num_val=2, image_size=32)
    return tmp_path / "ade"


def build_ade(root: Path, loader: str):
    return build_dataset(SEGMENTATION, loader, root / "ADEChallengeData2016", scope="mmseg")


def test_ade_label_map_of_wrong_size_or_mode_is_refused_before_training(ade_root):
    assert len(build_ade(ade_root, "train_dataloader")) == 3
    base = ade_root / "ADEChallengeData2016"
    small = base / "annotations/training/ADE_train_00000002.png"
    Image.new("L", (16, 16), 1).save(small)
    rgb = base / "annotations/validation/ADE_val_00000001.png"
    Image.new("RGB", (32, 32)).save(rgb)
    with pytest.raises(DatasetDefectError, match=re.escape(f"{small}: size (16, 16) differs")) as err:
        build_ade(ade_root, "train_dataloader")
    assert "expected (32, 32)" in str(err.value)
    with pytest.raises(DatasetDefectError, match=re.escape(f"{rgb}: label map mode RGB, expected 8-bit")):
        build_ade(ade_root, "val_dataloader")
    result = check_tool("ade20k", ade_root)
    assert result.returncode == 1, result.stdout
    assert f"{small}: size (16, 16) differs" in result.stdout and f"{rgb}: label map mode RGB" in result.stdout


# --------------------------------------------------------------------------- 0-byte images


def test_zero_byte_jpeg_is_named_by_every_stage(tmp_path, ade_root):
    root = small_imagenet(tmp_path / "imagenet")
    empty = sorted((root / "train").rglob("*.JPEG"))[0]
    empty.write_bytes(b"")
    for config in (TINY_CONFIG, CLASSIFICATION):  # both read with pretrain.data.load_rgb, at the sample
        dataset = build_dataset(config, "train_dataloader", root)
        files = dataset.files if config == TINY_CONFIG else [path for path, _ in dataset.samples]
        with pytest.raises(UnreadableImageError, match=re.escape(f"cannot read image {empty}")):
            dataset[files.index(empty)]
    assert [p for p, _ in check_dataset(root, workers=1).unreadable] == [empty]

    ade_image = ade_root / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg"
    ade_image.write_bytes(b"")
    with pytest.raises(DatasetDefectError, match=re.escape(f"{ade_image}: unreadable image")):
        build_ade(ade_root, "train_dataloader")

    coco = tmp_path / "coco"
    write_coco_like(coco, num_train=2, num_val=1, image_size=(40, 32))
    coco_image = coco / "train2017/000000000001.jpg"
    coco_image.write_bytes(b"")
    with pytest.raises(DatasetDefectError, match=re.escape(f"{coco_image}: 0 bytes")):
        build_dataset(DETECTION, "train_dataloader", coco, scope="mmdet")
    assert [p for p, _ in check_dataset(coco, "coco", workers=1).unreadable] == [coco_image]


def test_truncated_label_map_is_named_when_its_sample_loads(ade_root):
    label_map = ade_root / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    label_map.write_bytes(label_map.read_bytes()[:90])  # the header (size, mode) survives: found only at decoding
    dataset = build_ade(ade_root, "train_dataloader")
    with pytest.raises(DatasetSampleError, match=re.escape(f"{label_map}): OSError: image file is truncated")):
        dataset[0]
    result = check_tool("ade20k", ade_root)
    assert result.returncode == 1 and f"{label_map}: unreadable label map" in result.stdout


def test_image_emptied_after_the_list_was_built_is_named_when_it_loads(tmp_path):
    coco = tmp_path / "coco"
    write_coco_like(coco, num_train=1, num_val=1, image_size=(40, 32))
    dataset = build_dataset(DETECTION, "val_dataloader", coco, scope="mmdet")
    image = coco / "val2017/000000000001.jpg"
    image.write_bytes(b"")  # mmcv's loader raises cv2's "!buf.empty()" alone
    with pytest.raises(DatasetSampleError, match=re.escape(f"cannot load sample 0 ({image})")):
        dataset[0]


# --------------------------------------------------------------------------- COCO annotations


def test_coco_malformed_segmentation_is_refused_naming_the_annotation(tmp_path):
    coco = tmp_path / "coco"
    write_coco_like(coco, num_train=3, num_val=1, image_size=(40, 32))
    assert len(build_dataset(DETECTION, "train_dataloader", coco, scope="mmdet")) > 0
    ann_file = coco / "annotations/instances_train2017.json"
    doc = json.loads(ann_file.read_text())
    empty, odd, extra = doc["annotations"][:3]
    empty["segmentation"] = []
    odd["segmentation"] = [[1, 2, 3, 4, 5]]
    extra["segmentation"].append([1, 2, 3, 4])  # beside a usable polygon: mmdet drops it, nothing is lost
    ann_file.write_text(json.dumps(doc))
    image_of = {img["id"]: img["file_name"] for img in doc["images"]}
    where = "instances_train2017.json annotation {id} (image {image_id}, {name})"
    with pytest.raises(DatasetDefectError) as err:
        build_dataset(DETECTION, "train_dataloader", coco, scope="mmdet")
    message = str(err.value)
    assert message.startswith(str(ann_file))
    assert where.format(**empty, name=image_of[empty["image_id"]]) + ": segmentation: []" in message
    no_polygon = ": no usable polygon: polygons need an even number (>= 6)"
    assert where.format(**odd, name=image_of[odd["image_id"]]) + no_polygon in message
    assert f"annotation {extra['id']} " not in message
    result = check_tool("coco", coco)
    assert result.returncode == 1, result.stdout
    assert f"annotation {empty['id']} (image {empty['image_id']}" in result.stdout
    assert "segmentation: []" in result.stdout


def test_coco_box_outside_its_image_is_refused(tmp_path):
    coco = tmp_path / "coco"
    write_coco_like(coco, num_train=2, num_val=1, image_size=(40, 32))
    ann_file = coco / "annotations/instances_train2017.json"
    doc = json.loads(ann_file.read_text())
    doc["annotations"][0]["bbox"] = [60, 40, 10, 10]  # mmdet would drop it silently
    ann_file.write_text(json.dumps(doc))
    with pytest.raises(DatasetDefectError, match=re.escape("bbox [60, 40, 10, 10] lies outside the 40x32 image")):
        build_dataset(DETECTION, "train_dataloader", coco, scope="mmdet")
    assert not check_dataset(coco, "coco", workers=1).ok
