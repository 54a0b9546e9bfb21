"""ImageNet in webdataset shards: packing (tools/pack_shards.py), resuming an
interrupted packing, checking, and reading them as the folder datasets do."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pretrain.data import PretrainImageDataset, scan_imagenet_split
from pretrain.data.sampler import SampleIndex, sample_random_state
from pretrain.data.shard_dataset import ShardedDataset, ShardedPretrainDataset
from pretrain.data.shard_pack import pack
from pretrain.data.shards import ShardError, load_manifest, read_manifest, shard_problems

from conftest import REPO, TINY_CONFIG, build_runner, run_tool, tiny_options

SHARDS_TINY_CONFIG = REPO / "pretrain/configs/sdae_vit-tiny-p16_1xb32-10e_synthetic-shards.py"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def packed(small_imagenet, tmp_path_factory) -> Path:
    """small_imagenet's 48 training images in shards of 5 (the last holds 3)."""
    out = tmp_path_factory.mktemp("shards")
    return pack(small_imagenet, out, "train", shard_size=5).path


@pytest.fixture(scope="session")
def folder_samples(small_imagenet) -> Counter:
    samples, _ = scan_imagenet_split(small_imagenet, "train")
    return Counter((digest(path.read_bytes()), label) for path, label in samples)


def read_epoch(manifest: Path, world_size: int, workers: int, epoch: int = 0, seed: int = 0, batch: int = 4) -> list:
    """Every rank's batches of one epoch as (image sha256, label) pairs, rank after rank."""
    batches = []
    for rank in range(world_size):
        dataset = ShardedDataset(str(manifest), 4, seed, batch, rank=rank, world_size=world_size)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=list)
        rank_batches = [[(digest(s.data), s.label) for s in b] for b in loader]
        assert len(rank_batches) == len(loader)  # the epoch length mmengine's loop plans with
        batches += rank_batches
    return batches


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world_size", [1, 2])
def test_an_epoch_reads_the_folder_samples_each_once(packed, folder_samples, world_size, workers):
    # 10 shards of 5, 5, ..., 3 samples over 2 ranks x 2 workers: shards do not divide evenly.
    samples = [s for batch in read_epoch(packed, world_size, workers) for s in batch]
    assert Counter(samples) == folder_samples


def test_a_world_size_that_does_not_divide_the_samples_pads_like_distributed_sampler(packed, folder_samples):
    # 48 samples, 5 ranks: each rank reads ceil(48 / 5) = 10; the 2 padded ones are read twice.
    lengths = [len(ShardedDataset(str(packed), rank=r, world_size=5)) for r in range(5)]
    assert lengths == [10] * 5
    samples = Counter(s for batch in read_epoch(packed, 5, 0, batch=3) for s in batch)
    assert samples.keys() == folder_samples.keys()
    assert sorted(samples.values()) == [1] * 46 + [2] * 2
    # drop_last: every rank forms 10 // 3 = 3 batches, also with two workers
    for rank in range(5):
        dataset = ShardedDataset(str(packed), seed=0, batch_size=3, rank=rank, world_size=5)
        loader = DataLoader(dataset, batch_size=3, num_workers=2, drop_last=True, collate_fn=list)
        assert len(list(loader)) == len(loader) == 3


def test_seed_and_epoch_decide_the_order(packed):
    def order(**kwargs):
        return [s for batch in read_epoch(packed, 1, 0, **kwargs) for s in batch]

    assert order(epoch=1) == order(epoch=1)
    assert order(epoch=1) != order(epoch=2)
    assert order(epoch=1, seed=1) != order(epoch=1, seed=0)
    assert sorted(order(epoch=1)) == sorted(order(epoch=2))


def test_persistent_workers_follow_set_epoch(packed):
    def keys(loader):
        return [s.key for batch in loader for s in batch]

    dataset = ShardedDataset(str(packed), 4, seed=0, batch_size=4)
    persistent = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=list)
    first = keys(persistent)
    dataset.set_epoch(1)  # the workers hold their own copy of the dataset since epoch 0
    second = keys(persistent)
    fresh = ShardedDataset(str(packed), 4, seed=0, batch_size=4)
    fresh.set_epoch(1)
    assert second == keys(DataLoader(fresh, batch_size=4, num_workers=2, collate_fn=list))
    assert first != second


def test_pretrain_and_classification_samples_match_the_folder_datasets(small_imagenet, packed):
    import classification.engine  # noqa: F401  (registers the classification datasets)
    from classification.data import ImageNetClassification
    from classification.shard_data import ShardedImageNetClassification

    folder = PretrainImageDataset(str(small_imagenet), "train", img_size=96)
    sharded = ShardedPretrainDataset(str(packed), img_size=96, seed=0)
    index = {f"{p.parent.name}/{p.stem}": i for i, p in enumerate(folder.files)}
    stored = next(iter(ShardedDataset(str(packed), seed=0)))  # any one sample as stored
    with sample_random_state(SampleIndex(0, 1234)):
        from_shard = sharded.make_sample(stored)
    assert torch.equal(from_shard["inputs"], folder[SampleIndex(index[stored.key], 1234)]["inputs"])

    for transform in ("eval", "finetune"):
        folder_cls = ImageNetClassification(str(small_imagenet), "train", transform, img_size=64)
        sharded_cls = ShardedImageNetClassification(str(packed), transform, img_size=64, seed=0)
        i = next(i for i, (p, _) in enumerate(folder_cls.samples) if f"{p.parent.name}/{p.stem}" == stored.key)
        with sample_random_state(SampleIndex(0, 99)):
            from_shard = sharded_cls.make_sample(stored)
        with sample_random_state(SampleIndex(0, 99)):
            from_folder = folder_cls[i]
        assert torch.equal(from_shard["inputs"], from_folder["inputs"])
        assert from_shard["data_samples"] == from_folder["data_samples"] == stored.label
        assert sharded_cls.metainfo["classes"] == folder_cls.metainfo["classes"]


def shard_entries(manifest: Path) -> list[dict]:
    return json.loads(manifest.read_text())["shards"]


@pytest.mark.slow
def test_a_killed_packing_resumes_to_the_same_shards(small_imagenet, tmp_path):
    reference = pack(small_imagenet, tmp_path / "reference", "train", shard_size=1)
    out = tmp_path / "out"
    command = [sys.executable, "tools/pack_shards.py", str(small_imagenet), str(out), "--shard-size", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tool = subprocess.Popen([*command, "--workers", "1"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    for line in tool.stderr:  # one progress line per finished shard
        if line.startswith("2/48 shards"):
            tool.send_signal(signal.SIGKILL)
            break
    tool.wait(timeout=60)
    assert tool.returncode == -signal.SIGKILL
    interrupted = read_manifest(out / "train-manifest.json")
    assert not interrupted.complete and 2 <= sum(s.sha256 is not None for s in interrupted.shards) < 48
    with pytest.raises(ShardError, match="did not finish"):
        load_manifest(out / "train-manifest.json")

    result = run_tool(*command[1:], "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert shard_entries(out / "train-manifest.json") == shard_entries(reference.path)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_keeps_intact_shards_and_rewrites_the_rest(small_imagenet, packed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(packed.parent, out)
    manifest = out / "train-manifest.json"
    doc = json.loads(manifest.read_text())
    doc["complete"] = False
    doc["shards"][5].update(sha256=None, bytes=None)  # killed between the rename and the manifest update
    manifest.write_text(json.dumps(doc))
    with open(out / "train-000003.tar", "r+b") as f:  # truncated
        f.truncate(3000)
    (out / "train-000009.tar").unlink()  # never written
    (out / ".train-000009.tar.4242.deadbeef.tmp").write_bytes(b"partial")
    untouched = (out / "train-000000.tar").stat()

    pack(small_imagenet, out, "train", shard_size=5)
    assert shard_entries(manifest) == shard_entries(packed)
    assert json.loads(manifest.read_text())["complete"] is True
    assert not (out / ".train-000009.tar.4242.deadbeef.tmp").exists()
    kept = (out / "train-000000.tar").stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    with pytest.raises(ShardError, match="differs in: seed"):
        pack(small_imagenet, out, "train", shard_size=5, seed=1)


def test_a_damaged_shard_is_named(packed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(packed.parent, out)
    damaged = out / "train-000004.tar"
    with open(damaged, "r+b") as f:  # same size, other bytes: only the hash tells
        f.seek(2000)
        f.write(b"XXXX")
    result = run_tool("tools/check_shards.py", str(out / "train-manifest.json"), "--workers", "1")
    assert result.returncode == 1
    assert f"shard {damaged} is damaged" in result.stdout and "1 problem(s)" in result.stdout
    dataset = ShardedDataset(str(out / "train-manifest.json"), seed=0, verify=True)
    with pytest.raises(ShardError, match=f"shard {damaged} is damaged"):
        list(dataset)
    intact = read_manifest(packed)
    assert [p for shard in intact.shards for p in shard_problems(intact, shard)] == []

    with open(damaged, "r+b") as f:  # truncated: refused when the dataset is built
        f.truncate(3000)
    with pytest.raises(ShardError, match=f"shard {damaged} has 3000 bytes"):
        ShardedDataset(str(out / "train-manifest.json"))


@pytest.mark.slow
def test_runner_trains_an_epoch_from_shards(tmp_path, packed):
    options = tiny_options(packed.parent, **{"train_cfg.max_epochs": 1, "train_dataloader.num_workers": 2})
    del options["train_dataloader.dataset.data_root"]
    options["train_dataloader.dataset.manifest"] = str(packed)
    runner = build_runner(SHARDS_TINY_CONFIG, tmp_path, options)
    runner.train()
    dataset = runner.train_dataloader.dataset
    assert isinstance(dataset, ShardedPretrainDataset)
    assert (dataset.seed, dataset.batch_size, dataset.epoch) == (0, 16, 0)  # the run's seed, the loader's batch
    assert runner.iter == 3  # 48 images, batches of 16
    logs = [json.loads(line) for line in next(tmp_path.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    losses = [log["loss"] for log in logs if "loss" in log]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_the_shards_config_differs_from_the_folder_config_only_in_its_data():
    from mmengine.config import Config

    folder, shards = Config.fromfile(TINY_CONFIG), Config.fromfile(SHARDS_TINY_CONFIG)
    assert shards.train_dataloader.sampler is None
    assert shards.default_hooks.sampler_seed == dict(type="ShardedDataHook")
    for key in ("img_size", "crop_scale", "hflip"):
        assert shards.train_dataloader.dataset[key] == folder.train_dataloader.dataset[key]
    assert shards.model == folder.model and shards.optim_wrapper == folder.optim_wrapper


# The README's override that makes a fine-tuning config train from shards.
CLASSIFICATION_SHARDS = (
    "train_dataloader.sampler=None train_dataloader.dataset._delete_=True "
    "train_dataloader.dataset.type=ShardedImageNetClassification train_dataloader.dataset.manifest={manifest} "
    "train_dataloader.dataset.transform=finetune train_dataloader.dataset.img_size=64 "
    "default_hooks.sampler_seed.type=ShardedDataHook"
)


def test_the_readme_override_makes_fine_tuning_read_shards(packed):
    import argparse

    from mmengine.config import Config, DictAction
    from mmengine.registry import DATASETS

    import classification.engine  # noqa: F401
    from classification.shard_data import ShardedImageNetClassification
    from pretrain.engine.config_checks import check_cfg_options, check_hook_options

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    options = parser.parse_args(["--cfg-options", *CLASSIFICATION_SHARDS.format(manifest=packed).split()]).cfg_options
    cfg = Config.fromfile(REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py")
    check_cfg_options(cfg, options)
    cfg.merge_from_dict(options)
    check_hook_options(cfg)
    assert cfg.train_dataloader.sampler is None and cfg.default_hooks.sampler_seed.type == "ShardedDataHook"
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert isinstance(dataset, ShardedImageNetClassification) and len(dataset) == 48
