"""Frozen features of a canonical backbone over an ImageNet-layout split, extracted
once and cached on disk for every probe that reads them (k-NN, low-shot logistic
regression).

The feature of an image is what MAE's linear probe reads: the class token after
the encoder's final norm, or - for an encoder whose final norm acts on the mean
patch token (``final_norm="mean_pooled"``) - that normalised mean.

A cache entry is one safetensors file (features, labels) whose metadata holds the
full key it was made for: the weights' sha256, the architecture, the feature, a
hash of the transform's description, the split and a hash of the split's file
list. The file name is a hash of that key; on reading, the stored key must equal
the wanted one and the features their stored sha256, else the entry is ignored and
extracted again. Entries are written to a temporary file and renamed, so a killed
extraction leaves no file that a later run would read.
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from pretrain.checkpoints import pooled_norm

from .data import ImageNetClassification
from .models import build_backbone, frozen_features

CACHE_FORMAT = "sdae-suite/frozen-features"
CACHE_VERSION = 1  # raise when what a feature is changes: old entries then never match
METADATA_KEY = "sdae_suite_features"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def feature_name(encoder: nn.Module) -> str:
    return "mean_patch_token_after_fc_norm" if pooled_norm(encoder) is not None else "class_token_after_final_norm"


def file_list_sha256(dataset: ImageNetClassification) -> str:
    """Hash of the split's images (paths relative to the split folder) and labels, in order."""
    lines = (f"{path.relative_to(dataset.split_dir).as_posix()}\t{label}\n" for path, label in dataset.samples)
    return sha256_text("".join(lines))


def cache_key(backbone_meta: dict, encoder: nn.Module, dataset: ImageNetClassification) -> dict:
    """Everything the features depend on. ``dataset.transform``'s repr names every
    step with its parameters (resize, crop, interpolation, mean/std)."""
    if "weights_sha256" not in backbone_meta:
        raise ValueError(
            "frozen features are cached by the weights' sha256, which only a canonical backbone file has: "
            "give --backbone FILE.safetensors (tools/convert_checkpoint.py makes one; "
            "suite.runner.prepare_backbone('random:<arch>', DIR) writes a random-init control)"
        )
    transform = repr(dataset.transform)
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "weights_sha256": backbone_meta["weights_sha256"],
        "arch": backbone_meta.get("arch"),
        "feature": feature_name(encoder),
        "img_size": int(encoder.patch_embed.img_size[0]),
        "transform": transform,
        "transform_sha256": sha256_text(transform),
        "split": dataset.metainfo["split"],
        "classes_sha256": sha256_text("\n".join(dataset.classes)),
        "files_sha256": file_list_sha256(dataset),
        "num_images": len(dataset),
    }


def cache_path(cache_dir: Path, key: dict) -> Path:
    digest = sha256_text(json.dumps(key, sort_keys=True))
    return Path(cache_dir) / f"{key['split']}-{digest[:24]}.safetensors"


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy()).hexdigest()  # no copy of the bytes


def read_cache(path: Path, key: dict, logger: logging.Logger) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The entry's (features, labels) if it exists, is intact and was made for ``key``."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = json.loads((f.metadata() or {})[METADATA_KEY])
            features, labels = f.get_tensor("features"), f.get_tensor("labels")
    except Exception as err:  # a truncated or foreign file: safetensors raises its own error types
        logger.warning(f"feature cache {path} is unreadable ({str(err).splitlines()[0]}); extracting again")
        return None
    if stored.get("key") != key:
        logger.warning(f"feature cache {path} was made for another key; extracting again")
        return None
    if tensor_sha256(features) != stored.get("features_sha256") or len(labels) != key["num_images"]:
        logger.warning(f"feature cache {path} does not match its checksum (damaged?); extracting again")
        return None
    return features, labels


def write_cache(path: Path, key: dict, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Atomically: a temporary file in the same folder, renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    metadata = {METADATA_KEY: json.dumps({"key": key, "features_sha256": tensor_sha256(features)}, sort_keys=True)}
    try:
        save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def extract(
    encoder: nn.Module, loader: DataLoader, device: torch.device, logger: logging.Logger, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of every image of ``loader`` (in its order), on the CPU,
    with a log line of progress (images/s, ETA) about every 10 s."""
    encoder.eval().to(device)
    total, done = len(loader.dataset), 0
    features, labels = [], []
    start = last_log = time.time()
    for batch in loader:
        imgs = batch["inputs"].to(device, non_blocking=True)
        features.append(frozen_features(encoder, imgs).float().cpu())
        labels.append(torch.as_tensor(batch["data_samples"]).long())
        done += len(imgs)
        now = time.time()
        if now - last_log >= 10 or done == total:
            rate = done / max(now - start, 1e-9)
            eta = (total - done) / max(rate, 1e-9)
            logger.info(f"extracting {what}: {done}/{total} images, {rate:.1f} images/s, ETA {eta:.0f} s")
            last_log = now
    if done != total:
        raise RuntimeError(f"{what}: the loader gave {done} of {total} images (drop_last must be False)")
    return torch.cat(features), torch.cat(labels)


@dataclass
class FeatureSet:
    features: torch.Tensor  # (N, D) float32, CPU, in dataset.samples order
    labels: torch.Tensor  # (N,) int64
    dataset: ImageNetClassification
    cache_file: Path
    key: dict
    from_cache: bool
    seconds: float  # extraction (or cache read) time

    def record(self) -> dict:
        return {
            "file": str(self.cache_file),
            "from_cache": self.from_cache,
            "seconds": round(self.seconds, 2),
            "images": len(self.labels),
            "dim": int(self.features.shape[1]),
            "transform_sha256": self.key["transform_sha256"],
            "files_sha256": self.key["files_sha256"],
        }


def cached_features(
    encoder: nn.Module,
    backbone_meta: dict,
    loader: DataLoader,
    cache_dir: Path,
    device: torch.device,
    logger: logging.Logger,
) -> FeatureSet:
    """The features of ``loader.dataset`` (an :class:`ImageNetClassification`), from
    the cache if an intact entry for exactly this key exists, else extracted and cached."""
    dataset = loader.dataset
    if not isinstance(dataset, ImageNetClassification):
        raise TypeError(f"frozen features need an ImageNetClassification dataset, got {type(dataset).__name__}")
    key = cache_key(backbone_meta, encoder, dataset)
    path = cache_path(cache_dir, key)
    start = time.time()
    cached = read_cache(path, key, logger)
    if cached is not None:
        logger.info(f"{key['split']} features from the cache: {path}")
        return FeatureSet(*cached, dataset, path, key, True, time.time() - start)
    features, labels = extract(encoder, loader, device, logger, f"{key['split']} features")
    expected = torch.tensor([label for _, label in dataset.samples])
    if not torch.equal(labels, expected):
        raise RuntimeError(
            f"{key['split']}: the loader's order differs from the dataset's (use a sampler without shuffle)"
        )
    write_cache(path, key, features, labels)
    logger.info(f"{key['split']} features cached: {path}")
    return FeatureSet(features, labels, dataset, path, key, False, time.time() - start)


def load_encoder(backbone_file: str, img_size: int) -> tuple[nn.Module, dict]:
    """The frozen encoder of a canonical file at ``img_size`` (strict load), and its metadata."""
    encoder, meta = build_backbone(backbone_file, img_size)
    encoder.requires_grad_(False)
    return encoder.eval(), meta
