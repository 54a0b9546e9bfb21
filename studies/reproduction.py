"""Small-scale reproduction on real images (``tools/benchmark_reproduction.py``):
pretrain a ViT-micro with MAE and with SdAE's teacher feedings under one budget,
evaluate each encoder, and summarise over seeds.

Every run goes through the same code as ``tools/train.py``: the repository's
configs, ``prepare_config``, mmengine's Runner; trained students are converted
to canonical files as users' checkpoints are (``suite.runner.prepare_backbone``).
Evaluation per encoder (the student, as for every downstream stage):

* linear probe - frozen features of the evaluation transform (class token after
  the final norm, MAE's probing feature; the mean patch token as a second
  reading), standardised, and an L2-regularised multinomial logistic regression
  (scikit-learn, lbfgs, C = 1, nothing tuned on validation data) on digits,
  textures and faces;
* short fine-tune - the fine-tuning recipe shortened to 5 epochs on the digits
  (``classification/configs/reproduction/``).
"""

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mmengine.runner import Runner

from pretrain.checkpoints import CanonicalBackbone, save_backbone
from pretrain.checkpoints.convert import infer_arch
from pretrain.engine.hooks import unwrap_model
from pretrain.engine.results import write_json
from pretrain.engine.runtime import prepare_config, set_epochs
from suite.runner import prepare_backbone

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_CONFIGS = {
    "sdae": REPO / "pretrain/configs/reproduction/sdae_vit-micro-p4_1xb128-6e_real32.py",
    "mae": REPO / "pretrain/configs/reproduction/mae_vit-micro-p4_1xb128-6e_real32.py",
}
FINETUNE_CONFIG = REPO / "classification/configs/reproduction/vit-micro-p4_finetune_1xb64-5e_digits32.py"
PROBE_SETS = ("digits", "textures", "faces")
PROBE_C = 1.0


@dataclass(frozen=True)
class Variant:
    """One pretraining method: a config plus overrides (``None`` config: no pretraining)."""

    name: str
    label: str
    config: str | None
    options: dict = field(default_factory=dict)


def _folds(t: int) -> dict:
    return {"model.teacher_input": dict(kind="multi_fold", num_tokens=None, num_folds=t)}


VARIANTS = {
    v.name: v
    for v in (
        Variant("random-init", "random init (no pretraining)", None),
        Variant("mae", "MAE (pixels)", "mae"),
        Variant(
            "full-image",
            "SdAE, full-image teacher",
            "sdae",
            {"model.teacher_input": dict(kind="full_image", num_tokens=None, num_folds=1)},
        ),
        Variant(
            "only-masked",
            "SdAE, only-masked teacher",
            "sdae",
            {"model.teacher_input": dict(kind="masked", num_tokens=None, num_folds=1)},
        ),
        Variant("multi-fold-2", "SdAE, multi-fold t=2", "sdae", _folds(2)),
        Variant("multi-fold-3", "SdAE, multi-fold t=3", "sdae", _folds(3)),
        Variant("multi-fold-4", "SdAE, multi-fold t=4", "sdae", _folds(4)),
        Variant(
            "multi-fold-3-no-norm",
            "SdAE, multi-fold t=3, no teacher norm",
            "sdae",
            {**_folds(3), "model.normalize_target": False},
        ),
        # Investigation variants (not in the default run): one change each.
        Variant(
            "multi-fold-3-ema-iter",
            "SdAE, multi-fold t=3, EMA every step",
            "sdae",
            {
                **_folds(3),
                "custom_hooks": [dict(type="TeacherEMAHook", interval="iter", momentum=0.96, final_momentum=0.99)],
            },
        ),
        Variant(
            "multi-fold-3-ema-count",
            "SdAE, multi-fold t=3, published 300 EMA updates",
            "sdae",
            {
                **_folds(3),
                "custom_hooks": [
                    dict(type="TeacherEMAHook", interval="count", num_updates=300, momentum=0.96, final_momentum=0.99)
                ],
            },
        ),
        Variant(
            "multi-fold-3-feature-axis",
            "SdAE, multi-fold t=3, cosine along features",
            "sdae",
            {**_folds(3), "model.loss_axis": "feature"},
        ),
        Variant(
            "multi-fold-3-teacher-copy",
            "SdAE, multi-fold t=3, teacher = copy of student",
            "sdae",
            {**_folds(3), "model.teacher_init": "student"},
        ),
    )
}
DEFAULT_VARIANTS = (
    "random-init",
    "mae",
    "full-image",
    "only-masked",
    "multi-fold-2",
    "multi-fold-3",
    "multi-fold-4",
    "multi-fold-3-no-norm",
)
# Metrics of a record, in table order: (key, column heading).
METRICS = (
    ("linear_digits", "linear digits"),
    ("linear_textures", "linear textures"),
    ("linear_faces", "linear faces"),
    ("finetune_digits", "fine-tune digits"),
    ("linear_avg_digits", "linear digits (mean patch)"),
)
# Facts of the pretraining runs, summarised beside the metrics.
DIAGNOSTICS = {
    "pretrain_s": "pretrain s",
    "final_loss": "final loss",
    "teacher_student_distance": "teacher-student distance",
    "teacher_norm_affine_dev": "teacher LN affine dev",
}


def fingerprint(
    variant: Variant,
    seed: int,
    data_recipe: dict,
    pretrain_options: dict,
    finetune_options: dict,
    pretrain_epochs: int | None = None,
) -> str:
    """Changes when anything that decides a record's numbers changes."""
    h = hashlib.sha256()
    configs = [FINETUNE_CONFIG] + ([PRETRAIN_CONFIGS[variant.config]] if variant.config else [])
    for config in configs:
        h.update(config.read_bytes())
    payload = dict(
        variant=variant.options,
        seed=seed,
        data=data_recipe["args"],
        pretrain=pretrain_options,
        finetune=finetune_options,
        probe_c=PROBE_C,
    )
    if pretrain_epochs is not None:
        payload["pretrain_epochs"] = pretrain_epochs
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _runner(
    config: Path, work_dir: Path, seed: int, options: dict, backbone: Path | None = None, epochs: int | None = None
) -> Runner:
    cfg, lr_line = prepare_config(
        str(config),
        str(work_dir),
        resume=False,
        cfg_options={"randomness.seed": seed, **options},
        backbone=None if backbone is None else str(backbone),
    )
    if epochs is not None:
        set_epochs(cfg, epochs)
    cfg.experiment_name = f"{work_dir.parent.name}-{work_dir.name}-{time.time_ns()}"
    runner = Runner.from_cfg(cfg)
    runner.logger.info(lr_line)
    return runner


def teacher_diagnostics(checkpoint: Path) -> dict:
    """Where the EMA teacher stands at the end of a run (empty for MAE), from its
    last checkpoint: ``teacher_student_distance`` = ||teacher - student|| /
    ||student|| over the encoder (0 for a copy, of order 1 for independent
    initialisations), and ``teacher_norm_affine_dev`` = the largest |gamma - 1| or
    |beta| of the teacher's final LayerNorm (0 = the identity affine, under which
    the per-token target normalisation of Eq. 3 changes nothing)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    teacher = {k.removeprefix("sdae.teacher."): v for k, v in state.items() if k.startswith("sdae.teacher.")}
    if not teacher:
        return {}
    student = {k.removeprefix("sdae.student."): v for k, v in state.items() if k.startswith("sdae.student.")}
    shared = [k for k in teacher if k in student and student[k].shape == teacher[k].shape]
    diff = sum(float((teacher[k] - student[k]).pow(2).sum()) for k in shared)
    norm = sum(float(student[k].pow(2).sum()) for k in shared)
    affine = max(float((teacher["norm.weight"] - 1).abs().max()), float(teacher["norm.bias"].abs().max()))
    return dict(teacher_student_distance=(diff / norm) ** 0.5, teacher_norm_affine_dev=affine)


def last_checkpoint(work_dir: Path) -> Path:
    return Path((work_dir / "last_checkpoint").read_text().strip())


def _save_student(model: torch.nn.Module, path: Path, metadata: dict) -> Path:
    state = {k: v.detach().clone() for k, v in unwrap_model(model).sdae.student.state_dict().items()}
    save_backbone(path, CanonicalBackbone(state, infer_arch(state), metadata))
    return path


def pretrain_from_config(
    config: Path,
    seed: int,
    data_root: Path,
    work_dir: Path,
    options: dict,
    epochs: int | None = None,
    control_name: str | None = None,
) -> dict:
    """Train ``config`` with ``seed`` on ``data_root`` and convert its student to a
    canonical file; with ``control_name``, only build the model and save its initial
    student (the random-init control: exactly the encoder the runs start from).
    Returns the pretraining facts (backbone file, time, steps, losses, teacher state)."""
    options = {"train_dataloader.dataset.data_root": str(data_root), **options}
    if control_name is not None:
        # only the model is built: the runner's environment and config dump would bury the study's progress lines
        options["log_level"] = "WARNING"
    start = time.time()
    runner = _runner(config, work_dir, seed, options, epochs=epochs)
    if control_name is not None:
        path = work_dir / "student.safetensors"
        _save_student(runner.model, path, dict(pretraining={"method": control_name, "seed": seed}))
        return dict(backbone=str(path), pretrain_s=0.0, steps=0)
    runner.train()
    history = runner.message_hub.get_scalar("train/loss")
    losses = [float(x) for x in history.data[0]]
    return dict(finished_run_facts(work_dir, losses, start), steps=runner.iter, epochs=runner.epoch)


def finished_run_facts(work_dir: Path, losses: list[float], start: float) -> dict:
    """What a finished pretraining run leaves: its student as a canonical file (through
    the converter, as users' checkpoints go), its time, first and final losses (mean
    of 5 iterations) and where its teacher stands."""
    checkpoint = last_checkpoint(work_dir)
    return dict(
        backbone=str(prepare_backbone(str(checkpoint), work_dir)),
        pretrain_s=round(time.time() - start, 1),
        first_loss=round(float(np.mean(losses[:5])), 4) if losses else None,
        final_loss=round(float(np.mean(losses[-5:])), 4) if losses else None,
        **teacher_diagnostics(checkpoint),
    )


def pretrain(
    variant: Variant, seed: int, data_root: Path, work_dir: Path, options: dict, epochs: int | None = None
) -> dict:
    """Train one variant (or, for the control, only build its initial model)."""
    if variant.config is None:
        return pretrain_from_config(
            PRETRAIN_CONFIGS["mae"], seed, data_root, work_dir, options, control_name=variant.name
        )
    return pretrain_from_config(
        PRETRAIN_CONFIGS[variant.config], seed, data_root, work_dir, {**variant.options, **options}, epochs
    )


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class-token features, mean-patch features, labels) of a split, evaluation transform."""
    from classification.data import ImageNetClassification

    encoder.eval()
    dataset = ImageNetClassification(str(root), split, transform="eval", img_size=32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False)
    cls, avg, labels = [], [], []
    for batch in loader:
        tokens = encoder.forward_tokens(encoder.embed_patches(batch["inputs"]))
        cls.append(tokens[:, 0])
        avg.append(tokens[:, 1:].mean(dim=1))
        labels.append(batch["data_samples"])
    return torch.cat(cls).numpy(), torch.cat(avg).numpy(), torch.cat(labels).numpy()


def logistic_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Top-1 (%) of a standardised multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
    probe.fit(train_x, train_y)
    return 100.0 * float((probe.predict(val_x) == val_y).mean())


def linear_probes(backbone: Path, data: Path) -> dict[str, float]:
    from classification.models import build_backbone

    encoder, _ = build_backbone(str(backbone), img_size=32)
    results = {}
    for name in PROBE_SETS:
        train_cls, train_avg, train_y = extract_features(encoder, data / name, "train")
        val_cls, val_avg, val_y = extract_features(encoder, data / name, "val")
        results[f"linear_{name}"] = logistic_probe(train_cls, train_y, val_cls, val_y)
        results[f"linear_avg_{name}"] = logistic_probe(train_avg, train_y, val_avg, val_y)
    return results


def finetune(backbone: Path, data_root: Path, work_dir: Path, seed: int, options: dict) -> dict:
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    dataset_options = {f"{loader}.dataset.data_root": str(data_root) for loader in loaders}
    start = time.time()
    runner = _runner(FINETUNE_CONFIG, work_dir, seed, {**dataset_options, **options}, backbone=backbone)
    runner.train()
    record = json.loads((work_dir / "result.json").read_text())
    return dict(finetune_digits=record["metrics"]["top1"], finetune_s=round(time.time() - start, 1))


def run_one(
    variant: Variant,
    seed: int,
    data: Path,
    out: Path,
    recipe: dict,
    pretrain_options: dict,
    finetune_options: dict,
    pretrain_epochs: int | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Pretrain, probe and fine-tune one (variant, seed), or return its record if
    one with the same fingerprint exists. Records are written atomically."""
    key = fingerprint(variant, seed, recipe, pretrain_options, finetune_options, pretrain_epochs)
    record_path = out / "records" / f"{variant.name}_seed{seed}.json"
    work = out / "work" / variant.name / f"seed{seed}"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == key:
            say(f"{variant.name} seed {seed}: recorded, skipped ({record_path})")
            return record
        say(f"{variant.name} seed {seed}: the recorded run used other settings, running again")
    start = time.time()
    facts = pretrain(variant, seed, data / "pretrain", work / "pretrain", pretrain_options, pretrain_epochs)
    backbone = Path(facts["backbone"])
    probes = linear_probes(backbone, data)
    tuned = finetune(backbone, data / "digits", work / "finetune", seed, finetune_options)
    record = dict(
        variant=variant.name,
        label=variant.label,
        seed=seed,
        fingerprint=key,
        **facts,
        **probes,
        **tuned,
        total_s=round(time.time() - start, 1),
        pretrain_config=str(PRETRAIN_CONFIGS[variant.config].relative_to(REPO)) if variant.config else None,
        pretrain_overrides=variant.options,
        pretrain_options=pretrain_options,
        pretrain_epochs=pretrain_epochs,
        finetune_config=str(FINETUNE_CONFIG.relative_to(REPO)),
        finetune_options=finetune_options,
    )
    write_json(record_path, record)
    return record


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_over_seeds(
    records: list[dict], names: list[str], group: str, labels: dict[str, str], keys: list[str]
) -> list[dict]:
    """One row per ``names`` entry (records grouped by their ``group`` field): the
    mean / sample std / n of every key in ``keys`` over its seeds."""
    rows = []
    for name in names:
        runs = [r for r in records if r[group] == name]
        if not runs:
            continue
        row = {group: name, "label": labels[name], "seeds": sorted(r["seed"] for r in runs)}
        for key in keys:
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                row[key] = dict(zip(("mean", "std"), mean_std(values), strict=True)) | {"n": len(values)}
        rows.append(row)
    return rows


def summarise(records: list[dict], variants: list[str]) -> list[dict]:
    """One row per variant: mean/std/n of every metric over its seeds."""
    labels = {name: VARIANTS[name].label for name in variants}
    return summarise_over_seeds(records, variants, "variant", labels, [k for k, _ in METRICS] + list(DIAGNOSTICS))


def stat_cell(stat: dict | None, digits: int = 1) -> str:
    """``mean ± std`` of a summary cell, ``-`` where there is none."""
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    heads = ["variant", *[h for _, h in METRICS], *DIAGNOSTICS.values()]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        cells = [row["label"], *[stat_cell(row.get(k)) for k, _ in METRICS]]
        cells += [stat_cell(row.get(k), digits) for k, digits in zip(DIAGNOSTICS, (0, 3, 2, 3), strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stats_csv(rows: list[dict], group: str, keys: list[str]) -> str:
    """Summary rows as CSV: the group's name, its seeds, mean and std of each key."""
    lines = [f"{group},seeds," + ",".join(f"{k}_mean,{k}_std" for k in keys)]
    for row in rows:
        values = []
        for k in keys:
            stat = row.get(k)
            values += ["", ""] if stat is None else [f"{stat['mean']:.4f}", f"{stat['std']:.4f}"]
        lines.append(",".join([row[group], " ".join(map(str, row["seeds"])), *values]))
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    return stats_csv(rows, "variant", [k for k, _ in METRICS] + list(DIAGNOSTICS))


def plot(rows: list[dict], path: Path) -> None:
    """One panel per metric (mean ± std over seeds, random init as a dashed line),
    then the fold count (Fig. 4b at small scale) beside the other feedings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(k, h) for k, h in METRICS if k != "linear_avg_digits"]
    by_name = {r["variant"]: r for r in rows}
    folds = [t for t in (2, 3, 4) if f"multi-fold-{t}" in by_name]
    panels = len(metrics) + bool(folds)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels + 1, 0.45 * len(rows) + 2.5), squeeze=False)
    axes = axes[0]
    ys = np.arange(len(rows))[::-1]
    control = by_name.get("random-init")
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 is the control's grey
    colors = ["grey" if row["variant"] == "random-init" else palette[i % len(palette)] for i, row in enumerate(rows)]
    for ax, (key, heading) in zip(axes, metrics, strict=False):
        stats = [row.get(key) for row in rows]
        means = np.array([st["mean"] if st else np.nan for st in stats])
        stds = np.array([st["std"] if st else 0.0 for st in stats])
        for y, mean, std, color in zip(ys, means, stds, colors, strict=True):
            ax.errorbar(mean, y, xerr=std, fmt="o", color=color, capsize=3)
        ax.grid(axis="x", alpha=0.3)
        if control and key in control:
            ax.axvline(control[key]["mean"], color="black", linestyle="--", linewidth=1)
        low, high = np.nanmin(means - stds), np.nanmax(means + stds)
        ax.set_xlim(max(0.0, low - 0.15 * (high - low) - 1), min(100.0, high + 0.15 * (high - low) + 1))
        ax.set_title(heading)
        ax.set_xlabel("top-1 (%)")
        ax.set_yticks(ys, [row["label"] for row in rows] if ax is axes[0] else [])
    if folds:
        _plot_folds(axes[-1], by_name, folds)
    fig.suptitle("Small-scale reproduction: mean ± std over seeds (dashed: random init)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_folds(ax, by_name: dict, folds: list[int]) -> None:
    """Fig. 4b: multi-fold accuracy against t, other feedings as horizontal lines."""
    for color, key, heading in (
        ("C0", "finetune_digits", "fine-tune digits"),
        ("C1", "linear_digits", "linear digits"),
    ):
        stats = [by_name[f"multi-fold-{t}"][key] for t in folds]
        means, stds = [st["mean"] for st in stats], [st["std"] for st in stats]
        ax.errorbar(folds, means, stds, color=color, marker="o", capsize=3, label=f"multi-fold, {heading}")
        for name, style in (("full-image", ":"), ("only-masked", "-."), ("random-init", "--")):
            if name in by_name:
                mean = by_name[name][key]["mean"]
                ax.axhline(mean, color=color, linestyle=style, linewidth=1, label=f"{name}, {heading}")
    ax.set_xticks([2, 3, 4])
    ax.set_xlabel("teacher folds t")
    ax.set_ylabel("top-1 (%), mean ± std over seeds")
    ax.set_title("Fig. 4b at small scale")
    ax.legend(fontsize=7)
