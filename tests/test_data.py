import hashlib
import shutil

import pytest
import torch

from pretrain.data import ImageFolderError, PretrainImageDataset, UnreadableImageError, scan_imagenet_split
from pretrain.data.checks import check_dataset
from pretrain.data.synthetic import write_imagenet_like


def digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.JPEG")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic_and_in_imagenet_layout(tmp_path):
    counts = write_imagenet_like(tmp_path / "a", num_classes=3, train_per_class=4, val_per_class=2, seed=7)
    write_imagenet_like(tmp_path / "b", num_classes=3, train_per_class=4, val_per_class=2, seed=7)
    write_imagenet_like(tmp_path / "c", num_classes=3, train_per_class=4, val_per_class=2, seed=8)
    assert counts == {"train": 12, "val": 6}
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    samples, classes = scan_imagenet_split(tmp_path / "a", "val")
    assert len(classes) == 3 and len(samples) == 6
    assert sorted({label for _, label in samples}) == [0, 1, 2]


def test_dataset_yields_uint8_crops(synthetic_imagenet):
    ds = PretrainImageDataset(str(synthetic_imagenet), img_size=96)
    assert len(ds) == 320
    sample = ds[0]["inputs"]
    assert sample.dtype == torch.uint8 and sample.shape == (3, 96, 96)


def test_plain_folder_and_missing_folder(tmp_path, synthetic_imagenet):
    ds = PretrainImageDataset(str(synthetic_imagenet / "val"), subdir="", img_size=64)
    assert len(ds) == 80
    with pytest.raises(ImageFolderError, match="does not exist"):
        PretrainImageDataset(str(tmp_path), subdir="train")
    (tmp_path / "train").mkdir()
    with pytest.raises(ImageFolderError, match="no images"):
        PretrainImageDataset(str(tmp_path), subdir="train")


def test_unreadable_image_names_the_file(tmp_path):
    write_imagenet_like(tmp_path, num_classes=1, train_per_class=2, val_per_class=0)
    bad = sorted((tmp_path / "train").rglob("*.JPEG"))[1]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    ds = PretrainImageDataset(str(tmp_path), img_size=32)
    ds[0]
    with pytest.raises(UnreadableImageError, match=bad.name):
        ds[1]


def test_checker_lists_every_problem(tmp_path, synthetic_imagenet):
    root = tmp_path / "data"
    shutil.copytree(synthetic_imagenet, root)
    assert check_dataset(root).ok
    train = root / "train"
    classes = sorted(p for p in train.iterdir())
    corrupt = sorted(classes[0].iterdir())[0]
    corrupt.write_bytes(b"not a jpeg at all")
    empty_file = sorted(classes[1].iterdir())[0]
    empty_file.write_bytes(b"")
    (classes[2] / "notes.txt").write_text("x")
    (train / "stray.JPEG").write_bytes(b"")
    (train / "n99999999").mkdir()
    shutil.copytree(classes[3], root / "val" / "n88888888")
    report = check_dataset(root)
    assert not report.ok
    assert {p for p, _ in report.unreadable} == {corrupt, empty_file}
    text = "\n".join(report.layout)
    assert "notes.txt: not an image file" in text
    assert "stray.JPEG: file outside any class folder" in text
    assert "n99999999: class folder without images" in text
    assert "n88888888: class not present in 'train'" in text


def test_check_dataset_tool_exit_status(tmp_path, synthetic_imagenet):
    from conftest import run_tool

    ok = run_tool("tools/check_dataset.py", "imagenet", str(synthetic_imagenet), "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert "400 images checked: OK" in ok.stdout
    bad = run_tool("tools/check_dataset.py", "imagenet", str(tmp_path))
    assert bad.returncode == 1 and "missing" in bad.stdout
