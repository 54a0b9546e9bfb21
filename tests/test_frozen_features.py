"""Frozen-feature protocols: weighted k-NN (against a brute-force numpy vote), low-shot
subsets and logistic regression (against scikit-learn fits of their own), the
feature cache, the fine-tune subset restriction and tools/eval_features.py."""

import hashlib
import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from classification.data import ImageNetClassification, SubsetFileError, read_subset_file, subset_indices
from classification.features import cached_features, load_encoder
from classification.knn import KnnSizeError, knn_accuracy
from classification.lowshot import draw_subset, fit_logistic_regression, holdout_split

from conftest import REPO

LOGGER = logging.getLogger("test_frozen_features")


# --------------------------------------------------------------------------- k-NN


def brute_force_knn(train_x, train_y, val_x, val_y, k, temperature, num_classes):
    """Per val image, loops only: cosine to every train image, the k largest vote
    exp(sim / T) for their class; correct@n if the true class has a vote and fewer
    than n classes have more."""
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    val_x = val_x / np.linalg.norm(val_x, axis=1, keepdims=True)
    hits = {1: 0, 5: 0}
    for x, y in zip(val_x, val_y, strict=True):
        sims = [float(np.dot(x, t)) for t in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[train_y[i]] += math.exp(sims[i] / temperature)
        above = sum(v > votes[y] for v in votes)
        for n in hits:
            hits[n] += votes[y] > 0 and above < n
    return {f"top{n}_k{k}": 100.0 * h / len(val_y) for n, h in hits.items()}


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_knn_matches_a_brute_force_vote(chunk_size):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    train_y, val_y = rng.integers(0, 6, 120), rng.integers(0, 6, 23)
    train_x = centres[train_y] + 1.5 * rng.normal(size=(120, 16))
    val_x = centres[val_y] + 1.5 * rng.normal(size=(23, 16))
    got = knn_accuracy(
        torch.tensor(train_x), torch.tensor(train_y), torch.tensor(val_x), torch.tensor(val_y),
        [1, 3, 20, 120], temperature=0.07, num_classes=6, chunk_size=chunk_size,
    )  # fmt: skip
    expected = {}
    for k in (1, 3, 20, 120):
        expected |= brute_force_knn(train_x, train_y, val_x, val_y, k, 0.07, 6)
    assert got == pytest.approx(expected)
    assert 0 < got["top1_k20"] < 100  # the case is not trivial


def test_knn_weights_follow_the_temperature():
    """Hand computation: one neighbour of class 0 at cosine 1, two of class 1 at 0.9.
    T = 0.07: e^(1/0.07) > 2 e^(0.9/0.07) (ratio 2 e^-1.43 = 0.48), class 0 wins;
    T = 1: e^1 = 2.72 < 2 e^0.9 = 4.92, class 1 wins."""
    s = math.sqrt(1 - 0.9**2)
    train = torch.tensor([[1.0, 0.0, 0.0], [0.9, s, 0.0], [0.9, 0.0, s]])
    labels = torch.tensor([0, 1, 1])
    query, truth = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    assert knn_accuracy(train, labels, query, truth, [3], temperature=0.07)["top1_k3"] == 100.0
    assert knn_accuracy(train, labels, query, truth, [3], temperature=1.0)["top1_k3"] == 0.0


def test_k_larger_than_the_train_set_is_refused():
    x = torch.randn(10, 4)
    with pytest.raises(KnnSizeError, match=r"knn.k=\[20\] exceeds the 10 training images"):
        knn_accuracy(x, torch.arange(10) % 2, x[:3], torch.zeros(3, dtype=torch.long), [5, 20])


# --------------------------------------------------------------------------- low-shot subsets


def test_subset_counts_per_class_and_determinism():
    counts = [150, 149, 40, 1, 300]
    labels = np.repeat(np.arange(5), counts)
    # round half up, at least one: 1.5 -> 2, 1.49 -> 1, 0.4 -> 1, 0.01 -> 1, 3 -> 3; 10 %: 15, 14.9 -> 15, 4, 1, 30
    for percent, expected in ((1, [2, 1, 1, 1, 3]), (10, [15, 15, 4, 1, 30])):
        chosen = draw_subset(labels, percent, seed=3)
        assert np.bincount(labels[chosen], minlength=5).tolist() == expected
        assert np.all(np.diff(chosen) > 0)  # sorted, no repeats
        assert np.array_equal(chosen, draw_subset(labels, percent, seed=3))
    assert not np.array_equal(draw_subset(labels, 10, seed=3), draw_subset(labels, 10, seed=4))


def test_user_subset_lists_are_matched_and_checked(small_imagenet, tmp_path):
    dataset = ImageNetClassification(str(small_imagenet), "train", "eval", img_size=32)
    relative = [p.relative_to(small_imagenet / "train").as_posix() for p, _ in dataset.samples]
    listing = tmp_path / "list.txt"
    # SimCLR's format: bare file names, unsorted
    listing.write_text("\n".join(Path(r).name for r in (relative[7], relative[2], relative[30])) + "\n")
    assert subset_indices(dataset.samples, dataset.split_dir, read_subset_file(listing), "list") == [2, 7, 30]
    listing.write_text(f"{relative[5]}\nnope/missing_1.JPEG\nmissing_2.JPEG\n")
    with pytest.raises(SubsetFileError, match=r"2 not found in .*first: nope/missing_1.JPEG, missing_2.JPEG"):
        subset_indices(dataset.samples, dataset.split_dir, read_subset_file(listing), str(listing))
    with pytest.raises(SubsetFileError, match="listed more than once"):
        subset_indices(dataset.samples, dataset.split_dir, [relative[1], Path(relative[1]).name], "list")


def test_subset_file_restricts_the_dataset(small_imagenet, tmp_path):
    full = ImageNetClassification(str(small_imagenet), "train", "eval", img_size=32)
    listing = tmp_path / "subset.txt"
    chosen = [full.samples[i] for i in (0, 13, 14, 40)]
    listing.write_text("".join(f"{p.relative_to(small_imagenet / 'train').as_posix()}\n" for p, _ in chosen))
    subset = ImageNetClassification(str(small_imagenet), "train", "eval", img_size=32, subset_file=str(listing))
    assert subset.samples == chosen and subset.classes == full.classes
    with pytest.raises(SubsetFileError, match="subset file not found"):
        ImageNetClassification(str(small_imagenet), "train", "eval", subset_file=str(tmp_path / "none.txt"))


@pytest.mark.slow
def test_finetune_config_trains_on_exactly_the_listed_files(small_imagenet, tmp_path):
    from suite.runner import prepare_backbone

    from conftest import build_runner, tiny_options

    full = ImageNetClassification(str(small_imagenet), "train", "eval")
    listed = sorted(p.relative_to(small_imagenet / "train").as_posix() for p, _ in full.samples[::3])
    listing = tmp_path / "lowshot_1pct.txt"
    listing.write_text("".join(f"{p}\n" for p in listed))
    backbone = prepare_backbone("random:tiny", tmp_path)
    options = tiny_options(
        small_imagenet,
        **{"train_dataloader.dataset.subset_file": str(listing), "model.backbone.checkpoint": str(backbone)},
    )
    config = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"
    runner = build_runner(config, tmp_path / "work", options)
    dataset = runner.train_dataloader.dataset
    assert sorted(p.relative_to(small_imagenet / "train").as_posix() for p, _ in dataset.samples) == listed
    seen = {int(i) for i in runner.train_dataloader.sampler}  # one epoch of the sampler: only those images
    assert seen == set(range(len(listed)))


# --------------------------------------------------------------------------- logistic regression


def clustered(rng, n, classes=4, dim=12, noise=1.2):
    centres = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    x = centres[y] + noise * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_logistic_regression_is_scikit_learns_fit_at_the_chosen_c():
    rng = np.random.default_rng(1)
    x, y = clustered(rng, 80)
    fit = fit_logistic_regression(x, y, 4, c_grid=(0.5,), tol=1e-10, max_iter=5000)
    reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(x, y)
    assert fit.best_c == 0.5
    np.testing.assert_allclose(fit.model.coef_, reference.coef_, atol=1e-5)
    np.testing.assert_allclose(fit.model.predict_proba(x), reference.predict_proba(x), atol=1e-6)


def test_c_is_the_best_on_the_held_out_images():
    rng = np.random.default_rng(2)
    x, y = clustered(rng, 120, noise=2.0)
    grid = (1e-4, 1e-2, 1.0, 100.0)
    fit = fit_logistic_regression(x, y, 4, c_grid=grid, holdout_fraction=0.25, seed=5, tol=1e-10, max_iter=5000)
    held, rest = holdout_split(y, 0.25, seed=5)
    assert len(held) == 30 and fit.holdout_images == 30
    # each C fitted from scratch; best top-1, ties to the lower log-loss
    results = []
    for c in grid:
        model = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x[rest], y[rest])
        proba = model.predict_proba(x[held])
        results.append((np.mean(proba.argmax(1) == y[held]), np.mean(np.log(proba[np.arange(30), y[held]])), c))
    assert fit.best_c == max(results)[2]
    assert fit.holdout_top1 == pytest.approx({c: 100 * acc for acc, _, c in results})


def test_hold_out_keeps_every_class_and_single_image_subsets_use_the_fixed_c():
    y = np.array([0, 0, 0, 1, 2, 2])
    for seed in range(10):
        held, rest = holdout_split(y, 0.5, seed)
        assert len(held) == 3 and set(y[rest]) == {0, 1, 2} and 1 not in y[held]
    rng = np.random.default_rng(3)
    x, y = clustered(rng, 4)  # one image of each of 4 classes
    fit = fit_logistic_regression(x, y, 4, c_grid=(0.1, 1.0), single_image_c=4000.0)
    assert fit.holdout_images == 0 and fit.best_c == 4000.0 and fit.model.C == 4000.0


# --------------------------------------------------------------------------- the feature cache


@pytest.fixture(scope="module")
def micro_backbones(tmp_path_factory):
    """A random-init ViT-micro (patch 8) file and one with other weights."""
    from pretrain.checkpoints import read_backbone, save_backbone
    from suite.runner import prepare_backbone

    root = tmp_path_factory.mktemp("backbones")
    first = prepare_backbone("random:micro-p8", root)
    other = read_backbone(first)
    other.state_dict = {k: v + 0.01 for k, v in other.state_dict.items()}
    save_backbone(root / "other.safetensors", other)
    return first, root / "other.safetensors"


def features_of(backbone, data_root, img_size=32, split="train"):
    from mmengine.runner import Runner

    encoder, meta = load_encoder(str(backbone), img_size)
    loader = Runner.build_dataloader(
        dict(
            batch_size=16, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
            dataset=dict(type="ImageNetClassification", data_root=str(data_root), split=split, transform="eval",
                         img_size=img_size),
        )
    )  # fmt: skip
    return encoder, meta, loader


@pytest.mark.slow
def test_cache_is_reused_and_keyed_by_weights_and_transform(micro_backbones, small_imagenet, tmp_path):
    cache = tmp_path / "cache"
    encoder, meta, loader = features_of(micro_backbones[0], small_imagenet)
    first = cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    assert not first.from_cache and first.features.shape == (48, 128)
    # reference: what the MAE-protocol linear probe reads of the same images
    from classification.models import ViTClassifier

    probe = ViTClassifier(4, dict(checkpoint=str(micro_backbones[0]), img_size=32), head="linear").eval()
    imgs = torch.stack([loader.dataset[i]["inputs"] for i in (0, 47)])
    torch.testing.assert_close(first.features[[0, 47]], probe.features(imgs), atol=1e-5, rtol=1e-5)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran although the features are cached")

    encoder.forward_tokens = no_encoder
    second = cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    assert second.from_cache and second.cache_file == first.cache_file
    assert torch.equal(second.features, first.features) and torch.equal(second.labels, first.labels)

    other_size = cached_features(*features_of(micro_backbones[0], small_imagenet, img_size=40), cache,
                                 torch.device("cpu"), LOGGER)  # fmt: skip
    other_weights = cached_features(*features_of(micro_backbones[1], small_imagenet), cache,
                                    torch.device("cpu"), LOGGER)  # fmt: skip
    assert not other_size.from_cache and not other_weights.from_cache
    assert len({first.cache_file, other_size.cache_file, other_weights.cache_file}) == 3
    assert not torch.equal(other_weights.features, first.features)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        p.name for p in (first.cache_file, other_size.cache_file, other_weights.cache_file)
    )  # no temporary files left


def test_damaged_or_foreign_cache_entries_are_not_read(micro_backbones, small_imagenet, tmp_path):
    cache = tmp_path / "cache"
    encoder, meta, loader = features_of(micro_backbones[0], small_imagenet, split="val")
    good = cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    data = good.cache_file.read_bytes()
    good.cache_file.write_bytes(data[: len(data) // 2])  # a truncated file
    again = cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    assert not again.from_cache and torch.equal(again.features, good.features)
    # the entry of other weights, renamed to this key's file name: its stored key differs
    other = cached_features(*features_of(micro_backbones[1], small_imagenet, split="val"), cache,
                            torch.device("cpu"), LOGGER)  # fmt: skip
    other.cache_file.replace(good.cache_file)
    third = cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    assert not third.from_cache and torch.equal(third.features, good.features)


def test_an_interrupted_write_leaves_no_entry(micro_backbones, small_imagenet, tmp_path, monkeypatch):
    import classification.features as features_module

    cache = tmp_path / "cache"
    encoder, meta, loader = features_of(micro_backbones[0], small_imagenet, split="val")

    def killed_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(features_module, "save_file", killed_save)
    with pytest.raises(KeyboardInterrupt):
        cached_features(encoder, meta, loader, cache, torch.device("cpu"), LOGGER)
    assert list(cache.iterdir()) == []


# --------------------------------------------------------------------------- the command line


def eval_features_tool():
    spec = importlib.util.spec_from_file_location("eval_features_tool", REPO / "tools/eval_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cli_writes_knn_and_lowshot_records_extracting_once(micro_backbones, small_imagenet, tmp_path):
    tool = eval_features_tool()
    data = [f"{loader}.dataset.{key}={value}" for loader in ("train_dataloader", "val_dataloader")
            for key, value in (("data_root", small_imagenet), ("img_size", 32))]  # fmt: skip
    common = ["--backbone", str(micro_backbones[0]), "--feature-cache", str(tmp_path / "cache")]
    knn = tool.main([str(REPO / "classification/configs/knn_vit-tiny-p16_synthetic.py"), *common,
                     "--work-dir", str(tmp_path / "knn"), "--cfg-options", *data, "knn.k=[5,10]"])  # fmt: skip
    record = json.loads((tmp_path / "knn/result.json").read_text())
    assert record["task"] == "knn" and record["metrics"] == pytest.approx(knn["metrics"])
    assert set(record["metrics"]) == {"top1_k5", "top5_k5", "top1_k10", "top5_k10"}
    assert record["backbone"]["weights_sha256"] and not record["timing"]["features_from_cache"]
    assert (tmp_path / "knn/eval_features.log").stat().st_size > 0

    lowshot = tool.main([str(REPO / "classification/configs/lowshot_vit-tiny-p16_synthetic.py"), *common,
                         "--work-dir", str(tmp_path / "low"), "--cfg-options", *data, "randomness.seed=1",
                         "lowshot.c_grid=[0.1,10.0]"])  # fmt: skip
    assert lowshot["timing"]["features_from_cache"]  # k-NN's features, not extracted again
    assert set(lowshot["metrics"]) == {"top1_1pct", "top5_1pct", "top1_10pct", "top5_10pct"}
    runs = lowshot["lowshot"]["runs"]
    listed = read_subset_file(runs["10pct"]["subset_file"])
    assert len(listed) == 4 * 1 and listed == sorted(listed)  # 12 images per class: 10 % -> 1.2 -> 1
    assert runs["10pct"]["subset_sha256"] == hashlib.sha256(Path(runs["10pct"]["subset_file"]).read_bytes()).hexdigest()

    with pytest.raises(SystemExit, match="exceeds the 48 training images"):
        tool.main([str(REPO / "classification/configs/knn_vit-tiny-p16_synthetic.py"), *common,
                   "--work-dir", str(tmp_path / "k2"), "--cfg-options", *data])  # fmt: skip
    for bad, message in (("knn.kk=3", "knn has no option 'kk'"), ("max_epochs=3", "would change nothing")):
        with pytest.raises(SystemExit, match=message):
            tool.main([str(REPO / "classification/configs/knn_vit-tiny-p16_synthetic.py"), *common,
                       "--work-dir", str(tmp_path / "k3"), "--cfg-options", bad])  # fmt: skip
