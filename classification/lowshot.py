"""Low-shot ImageNet: logistic regression on frozen features of 1 % / 10 % of the
train images.

Subsets: SimCLR's published ``1percent.txt`` / ``10percent.txt`` where given
(real ImageNet), else drawn from the seed: per class, round(percent x its images)
and at least one, without replacement. Either way the list actually used is
written as ``<class>/<image>`` lines, sorted, so that it can be fine-tuned on too
(``train_dataloader.dataset.subset_file``).

The classifier follows DINOv2's ``eval/log_regression.py``: L2-penalised
multinomial logistic regression (here scikit-learn's L-BFGS, float64, instead of
cuML), C chosen from 10 ** linspace(-6, 5, 45) by top-1 on a random 10 % of the
training images held out, then refit with that C on all of them. Features are
L2-normalised first (as MSN's ``logistic_eval.py`` normalises them). The sweep
runs from the smallest C up, each fit starting from the previous solution (the
objective is strictly convex, so only the time changes); ties in held-out top-1
go to the lower held-out log-loss, which only matters on tiny held-out sets.
A class's last image is never held out; a subset with one image of every class
(1 % of a class of < 150 images) leaves nothing to choose C on and takes MSN's
fixed regularisation instead (``single_image_c``; MSN's extreme low-shot protocol).
"""

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from pretrain.checkpoints.canonical import sha256_file

from .data import read_subset_file, subset_indices

# DINOv2 eval/log_regression.py: C_POWER_RANGE = linspace(-6, 5, 45), ALL_C = 10 ** C_POWER_RANGE
DINOV2_C_GRID = tuple(float(c) for c in 10.0 ** np.linspace(-6, 5, 45))
DINOV2_MAX_ITER = 1000
# MSN logistic_eval.py: fixed lambda = 0.00025 / n on (1/n) sum(loss) + lambda/2 |w|^2 (cyanure), which is
# scikit-learn's C sum(loss) + 1/2 |w|^2 with C = 1 / (lambda n) = 1 / 0.00025
MSN_C = 1 / 0.00025


def percent_tag(percent: float) -> str:
    return f"{percent:g}pct"


def draw_subset(labels: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """Sorted indices of ``percent`` % of the images of every class (rounded half
    up, at least one), drawn without replacement from ``seed``."""
    if not 0 < percent <= 100:
        raise ValueError(f"low-shot percent must be in (0, 100], got {percent}")
    rng = np.random.default_rng([seed, round(percent * 1000)])
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, math.floor(len(members) * percent / 100 + 0.5))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def write_subset_list(path: Path, relative_paths: list[str]) -> None:
    """One ``<class>/<image>`` a line, sorted (the format ``subset_file`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p}\n" for p in sorted(relative_paths)))


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def class_scores(model: LogisticRegression, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities; a class the model never saw gets -1 (never predicted)."""
    scores = np.full((len(features), num_classes), -1.0)
    scores[:, model.classes_] = model.predict_proba(features)
    return scores


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, topk: int) -> float:
    """% of rows whose true class has fewer than ``topk`` classes scored above it."""
    true = scores[np.arange(len(labels)), labels]
    return 100.0 * float(np.mean((scores > true[:, None]).sum(axis=1) < topk))


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(scores[np.arange(len(labels)), labels], 1e-15, None))))


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, fit) indices: a random ``fraction`` of the images (at least one), as
    DINOv2 holds out 10 % of the train set, except that a class's last image is never
    held out (the classifier must see every class it is scored on). Empty held-out
    part: every class has a single image."""
    remaining = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    wanted = max(1, int(len(labels) * fraction))
    held = []
    for i in np.random.default_rng(seed).permutation(len(labels)):
        if len(held) == wanted:
            break
        if remaining[labels[i]] > 1:
            remaining[labels[i]] -= 1
            held.append(i)
    held = np.sort(np.asarray(held, dtype=int))
    return held, np.setdiff1d(np.arange(len(labels)), held)


@dataclass
class LowShotFit:
    model: LogisticRegression
    best_c: float
    holdout_images: int  # 0: C was not chosen but fixed (a single image of every class)
    holdout_top1: dict[float, float] = field(default_factory=dict)


def fit_logistic_regression(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    c_grid: tuple[float, ...] = DINOV2_C_GRID,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = DINOV2_MAX_ITER,
    tol: float = 1e-4,
    single_image_c: float = MSN_C,
) -> LowShotFit:
    """C chosen on a held-out ``holdout_fraction`` of the images (:func:`holdout_split`),
    then the classifier refit with it on all of them. A subset with a single image of
    every class leaves nothing to hold out: C is then ``single_image_c``.
    ``features``: L2-normalised."""
    if len(np.unique(labels)) < 2:
        raise ValueError("logistic regression needs images of at least two classes")
    holdout, fit_part = holdout_split(labels, holdout_fraction, seed)
    holdout_top1 = {}
    best = None  # (top1, -log loss, C): larger is better, ties to the smaller C
    sweep = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the weakest penalties need not converge to be ranked
        for c in sorted(c_grid) if len(holdout) else ():
            sweep.set_params(C=c).fit(features[fit_part], labels[fit_part])
            scores = class_scores(sweep, features[holdout], num_classes)
            top1 = topk_accuracy(scores, labels[holdout], 1)
            holdout_top1[c] = top1
            candidate = (top1, -log_loss(scores, labels[holdout]))
            if best is None or candidate > best[:2]:
                best = (*candidate, c)
    best_c = best[2] if best else single_image_c
    final = LogisticRegression(C=best_c, max_iter=max_iter, tol=tol).fit(features, labels)
    return LowShotFit(final, best_c, len(holdout), holdout_top1)


def subset_for(train, percent: float, seed: int, given: str | None) -> tuple[np.ndarray, dict]:
    """Indices into ``train`` (a FeatureSet) of the ``percent`` % subset: the images of
    the ``given`` list, or drawn from ``seed``; and where they came from, for the record."""
    dataset = train.dataset
    if given is not None:
        entries = read_subset_file(given)
        indices = np.asarray(subset_indices(dataset.samples, dataset.split_dir, entries, given))
        return indices, {"source": str(given), "source_sha256": sha256_file(given)}
    return draw_subset(train.labels.numpy(), percent, seed), {"source": f"drawn from seed {seed}"}


def run_lowshot(train, val, settings: dict, seed: int, work_dir: Path, logger) -> tuple[dict[str, float], dict]:
    """The low-shot protocol on two :class:`~classification.features.FeatureSet` s.
    ``settings``: the config's ``lowshot`` dict. Writes ``lowshot_<p>pct.txt`` into
    ``work_dir``; returns the metrics and the record's protocol fields."""
    settings = dict(settings)
    percents = [float(p) for p in settings.pop("percents")]
    given = dict(settings.pop("subset_files") or {})
    c_grid = tuple(float(c) for c in settings.pop("c_grid"))
    options = {key: settings.pop(key) for key in ("holdout_fraction", "max_iter", "tol", "single_image_c")}
    if settings:
        raise ValueError(
            f"unknown lowshot options {sorted(settings)}; lowshot takes percents, subset_files, c_grid, "
            "holdout_fraction, max_iter, tol, single_image_c"
        )
    tags = {percent_tag(p): p for p in percents}
    unknown = sorted(set(given) - set(tags))
    if unknown:
        raise ValueError(f"lowshot.subset_files has {unknown}, which are not among lowshot.percents {sorted(tags)}")
    num_classes = len(train.dataset.classes)
    train_y = train.labels.numpy()
    val_x, val_y = l2_normalise(val.features.numpy()), val.labels.numpy()
    metrics, runs = {}, {}
    for tag, percent in tags.items():
        indices, provenance = subset_for(train, percent, seed, given.get(tag))
        list_file = Path(work_dir) / f"lowshot_{tag}.txt"
        write_subset_list(
            list_file, [train.dataset.samples[i][0].relative_to(train.dataset.split_dir).as_posix() for i in indices]
        )
        subset_x = l2_normalise(train.features[torch.from_numpy(indices)].numpy())  # float64 of the subset only
        fit = fit_logistic_regression(subset_x, train_y[indices], num_classes, c_grid, seed=seed, **options)
        scores = class_scores(fit.model, val_x, num_classes)
        metrics[f"top1_{tag}"] = topk_accuracy(scores, val_y, 1)
        metrics[f"top5_{tag}"] = topk_accuracy(scores, val_y, 5)
        logger.info(f"low-shot {tag}: {len(indices)} images, C = {fit.best_c:.3g}, top-1 {metrics[f'top1_{tag}']:.2f}")
        runs[tag] = {
            **provenance,
            "subset_file": str(list_file),
            "subset_sha256": sha256_file(list_file),
            "images": len(indices),
            "classes": len(np.unique(train_y[indices])),
            "best_C": fit.best_c,
            "C_chosen_on": "held-out images" if fit.holdout_images else "fixed (one image per class): single_image_c",
            "holdout_images": fit.holdout_images,
            "holdout_top1": {f"{c:.6g}": acc for c, acc in fit.holdout_top1.items()},
        }
    return metrics, {"lowshot": {"runs": runs, "c_grid_size": len(c_grid), **options}}
