"""JPEG decoding on the training device (``PretrainImageDataset(decode="device")`` and
the model's data preprocessor) against the CPU path, here on CPU tensors
(tests/test_gpu.py runs the same comparison with nvJPEG on CUDA)."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from pretrain.data import PretrainImageDataset, UnreadableImageError
from pretrain.data.device_decode import ENCODED_JPEG, RAW_RGB, decode_and_crop
from pretrain.engine.model import IMAGENET_MEAN, IMAGENET_STD, PretrainDataPreprocessor


def mixed_folder(root: Path, source: Path) -> Path:
    """Baseline JPEGs plus the files a device decoder may not take: greyscale and
    progressive JPEGs (decoded on the device), a CMYK JPEG and a PNG (CPU fallback)."""
    root.mkdir()
    jpegs = sorted((source / "train").rglob("*.JPEG"))[:6]
    for path in jpegs:
        shutil.copy(path, root / path.name)
    photo = Image.open(jpegs[0]).convert("RGB").resize((150, 100))
    photo.convert("L").save(root / "grey.JPEG", quality=90)
    photo.save(root / "progressive.JPEG", quality=90, progressive=True)
    photo.convert("CMYK").save(root / "cmyk.JPEG", quality=90)
    photo.save(root / "lossless.png")
    return root


def cpu_and_encoded(root: Path, img_size: int, seed: int) -> tuple[torch.Tensor, dict, list[str]]:
    """The CPU path's crops and the device path's collated batch, drawn from the same seed."""
    cpu = PretrainImageDataset(str(root), subdir="", img_size=img_size)
    encoded = PretrainImageDataset(str(root), subdir="", img_size=img_size, decode="device")
    torch.manual_seed(seed)
    expected = torch.stack([cpu[i]["inputs"] for i in range(len(cpu))])
    torch.manual_seed(seed)
    batch = default_collate([encoded[i] for i in range(len(encoded))])
    return expected, batch, [p.name for p in cpu.files]


@pytest.mark.parametrize("seed", [0, 1])
def test_device_decoding_gives_the_cpu_paths_crops(tmp_path, synthetic_imagenet, seed):
    root = mixed_folder(tmp_path / "mixed", synthetic_imagenet)
    expected, batch, names = cpu_and_encoded(root, 64, seed)
    assert all(isinstance(b, bytes) for b in batch["inputs"]) and batch["crop"].shape == (len(names), 9)
    kinds = dict(zip(names, batch["crop"][:, 0].tolist(), strict=True))
    assert kinds["cmyk.JPEG"] == kinds["lossless.png"] == RAW_RGB
    assert all(kind == ENCODED_JPEG for name, kind in kinds.items() if name not in ("cmyk.JPEG", "lossless.png"))
    assert batch["crop"][:, -1].tolist().count(1) not in (0, len(names))  # some flipped, some not
    decoded = decode_and_crop(batch["inputs"], batch["crop"], "cpu")
    assert decoded.dtype == torch.uint8 and decoded.shape == expected.shape
    for name, ours, theirs in zip(names, decoded, expected, strict=True):
        diff = (ours.int() - theirs.int()).abs()
        if kinds[name] == RAW_RGB:
            assert torch.equal(ours, theirs), name  # decoded and cropped by the CPU path itself
        else:
            # same decoder output (libjpeg), same crop box and flip; torch's antialiased bicubic
            # vs PIL's differ only in rounding
            assert diff.max() <= 2 and diff.float().mean() < 0.05, (name, diff.max(), diff.float().mean())
    preprocess = PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = preprocess(batch, True)
    assert set(out) == {"inputs", "data_samples"} and out["inputs"].dtype == torch.float32
    reference = preprocess(dict(inputs=expected), True)["inputs"]
    torch.testing.assert_close(out["inputs"], reference, rtol=0, atol=2 / min(IMAGENET_STD) + 1e-5)


def test_encoded_batches_travel_through_dataloader_workers(synthetic_imagenet):
    dataset = PretrainImageDataset(str(synthetic_imagenet), img_size=32, decode="device")
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=default_collate)
    batch = next(iter(loader))
    assert len(batch["inputs"]) == 8 and batch["crop"].shape == (8, 9) and len(batch["path"]) == 8
    out = PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD)(batch, True)["inputs"]
    assert out.shape == (8, 3, 32, 32)


def test_device_decoding_names_an_unreadable_file(tmp_path, synthetic_imagenet):
    root = mixed_folder(tmp_path / "mixed", synthetic_imagenet)
    bad = sorted(root.glob("*.JPEG"))[2]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # the header parses, the data ends early
    dataset = PretrainImageDataset(str(root), subdir="", img_size=32, decode="device")
    batch = default_collate([dataset[i] for i in range(len(dataset))])  # the worker side does not decode
    with pytest.raises(UnreadableImageError, match=bad.name):
        PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD)(batch, True)


def test_decode_option_is_checked(synthetic_imagenet):
    with pytest.raises(ValueError, match="decode must be"):
        PretrainImageDataset(str(synthetic_imagenet), decode="gpu")


def test_a_jpeg_the_device_decoder_refuses_is_decoded_on_the_cpu(tmp_path, synthetic_imagenet, monkeypatch):
    import pretrain.engine.model as engine_model

    root = mixed_folder(tmp_path / "mixed", synthetic_imagenet)
    _, batch, names = cpu_and_encoded(root, 64, seed=0)
    preprocess = PretrainDataPreprocessor(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    expected = preprocess(batch, True)["inputs"]
    progressive = batch["inputs"][names.index("progressive.JPEG")]
    decode = engine_model.decode_and_crop

    def refusing(encoded, records, device):  # a device decoder without progressive JPEGs
        if not isinstance(device, str) and progressive in encoded:
            raise RuntimeError("simulated: no progressive JPEGs")
        return decode(encoded, records, device)

    monkeypatch.setattr(engine_model, "decode_and_crop", refusing)
    with pytest.warns(UserWarning, match=r"progressive\.JPEG: decoded on the CPU"):
        out = preprocess(batch, True)["inputs"]
    assert torch.equal(out, expected)
