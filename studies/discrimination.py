"""Does the mini suite rank representations? (``tools/benchmark_discrimination.py``,
and ``tools/demo.py`` with one seed.)

For every seed: pretrain SdAE and MAE on the real-image mini suite's pretraining
set with one budget (same data, steps and schedule), take the random-init control
(exactly the student both runs start from for that seed), and run the ``real``
preset of the suite - fine-tune, linear probe, ADE20K-layout segmentation,
COCO-layout detection and instance segmentation - on each, through
``suite.runner.run_suite`` (its records are reused on rerun). Then: mean ±
sample std per method, task and metric over the seeds, and per pretrained method
and metric the gap to the control and whether it exceeds the seeds' spread
(``gap > std(method) + std(control)``: the two one-sigma intervals do not touch).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pretrain.data.real_suite import write_real_suite
from pretrain.engine.results import write_json
from studies.reproduction import (
    Variant,
    finished_run_facts,
    pretrain_from_config,
    stat_cell,
    stats_csv,
    summarise_over_seeds,
)
from suite.runner import DATASETS, REPO, run_task

PRETRAIN_CONFIGS = {
    "sdae": REPO / "pretrain/configs/real/sdae_vit-micro-p8_1xb128-30e_realsuite64.py",
    "mae": REPO / "pretrain/configs/real/mae_vit-micro-p8_1xb128-30e_realsuite64.py",
}
# (record key, heading, scale applied to the stage's number)
METRICS = (
    ("finetune_top1", "fine-tune top-1", 1.0),
    ("linprobe_top1", "linear top-1", 1.0),
    ("ade20k_miou", "ADE20K mIoU", 1.0),
    ("coco_box_ap", "COCO box AP", 100.0),
    ("coco_mask_ap", "COCO mask AP", 100.0),
    # the broader protocols (tools/run_suite.py --tasks knn,lowshot,attentive,ade20k-linear)
    ("knn_top1", "k-NN top-1 (k=20)", 1.0),
    ("lowshot_top1", "10 % logistic top-1", 1.0),
    ("attentive_top1", "attentive top-1", 1.0),
    ("ade20k_linear_miou", "ADE20K linear mIoU", 1.0),
)
SUITE_METRICS = {  # record key -> (suite task, metric name in its result)
    "finetune_top1": ("finetune", "top1"),
    "linprobe_top1": ("linprobe", "top1"),
    "ade20k_miou": ("ade20k", "mIoU"),
    "coco_box_ap": ("coco", "coco/bbox_mAP"),
    "coco_mask_ap": ("coco", "coco/segm_mAP"),
    "knn_top1": ("knn", "top1_k20"),
    "lowshot_top1": ("lowshot", "top1_10pct"),
    "attentive_top1": ("attentive", "top1"),
    "ade20k_linear_miou": ("ade20k-linear", "mIoU"),
}
DIAGNOSTICS = ("pretrain_s", "final_loss", "teacher_student_distance")
CONTROL = "random-init"


METHODS = {
    m.name: m
    for m in (
        Variant(CONTROL, "random init (no pretraining)", None),
        Variant("mae", "MAE", "mae"),
        Variant("sdae", "SdAE (teacher: published 300 updates)", "sdae"),
        Variant(
            "sdae-per-epoch",
            "SdAE (teacher: once per epoch)",
            "sdae",
            {"custom_hooks.0.interval": "epoch"},
        ),
    )
}
DEFAULT_METHODS = (CONTROL, "mae", "sdae")


def build_data(
    root: Path, say: Callable[[str], None] = print, data_args: dict | None = None
) -> tuple[dict[str, Path], dict]:
    """The real-image datasets under ``root`` (built once; ``data_args`` go to
    :func:`write_real_suite`), as the suite's data roots."""
    recipe = write_real_suite(root, progress=lambda message: say(f"data: {message}"), **(data_args or {}))
    return {"imagenet": root / "imagenet", "ade20k": root / "ade", "coco": root / "coco"}, recipe


def default_amp() -> str | None:
    """The real preset's configs are the GPU recipes (bf16); on a CPU they train in fp32."""
    return None if torch.cuda.is_available() else "none"


def _fingerprint(method: Variant, seed: int, recipe: dict, config: Path, epochs: int | None) -> str:
    h = hashlib.sha256()
    h.update(config.read_bytes())
    payload = dict(method=method.options, control=method.config is None, seed=seed, data=recipe["args"], epochs=epochs)
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _losses(work_dir: Path) -> list[float]:
    """Training losses logged by the run (mmengine's scalars.json of its last start)."""
    logs = sorted(work_dir.glob("*/vis_data/scalars.json"))
    if not logs:
        return []
    return [json.loads(line)["loss"] for line in logs[-1].read_text().splitlines() if '"loss"' in line]


def run_logged(cmd: list[str], work: Path, what: str) -> None:
    """Run a training command from the repository root with its output in
    ``work/train.log``; a failure raises, naming ``what`` and the log."""
    work.mkdir(parents=True, exist_ok=True)
    with (work / "train.log").open("w") as log:
        if subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode:
            raise RuntimeError(f"{what} failed; see {work / 'train.log'}")


def share_cpus(jobs: int) -> None:
    """Give each of ``jobs`` training processes started from here (they inherit the
    environment) its share of the CPU threads."""
    if jobs > 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or jobs) // jobs))


def pretrain_method(
    method: Variant,
    seed: int,
    data_root: Path,
    out: Path,
    recipe: dict,
    configs: dict[str, Path],
    epochs: int | None,
    say: Callable,
) -> dict:
    """Pretrain (``tools/train.py``, as a user runs it) or, for the control, build one
    (method, seed); reuse its record if the settings are unchanged and its backbone
    file is still there."""
    config = configs[method.config or "sdae"]
    key = _fingerprint(method, seed, recipe, config, epochs)
    record_path = out / "pretrain_records" / f"{method.name}_seed{seed}.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == key and Path(record["backbone"]).exists():
            say(f"{method.name} seed {seed}: pretrained already ({record_path})")
            return record
    work = out / "pretrain" / method.name / f"seed{seed}"
    if method.config is None:
        facts = pretrain_from_config(config, seed, data_root, work, {}, control_name=method.name)
    else:
        say(f"{method.name} seed {seed}: pretraining (log: {work / 'train.log'}) ...")
        options = {"randomness.seed": seed, "train_dataloader.dataset.data_root": str(data_root), **method.options}
        cmd = [sys.executable, str(REPO / "tools/train.py"), str(config), "--work-dir", str(work), "--no-resume"]
        cmd += [] if epochs is None else ["--epochs", str(epochs)]
        cmd += ["--cfg-options", *(f"{k}={v}" for k, v in options.items())]
        start = time.time()
        run_logged(cmd, work, f"{method.name} seed {seed}: pretraining")
        facts = dict(finished_run_facts(work, _losses(work), start), reproduce=" ".join(cmd))
        say(f"{method.name} seed {seed}: pretrained in {facts['pretrain_s']:.0f}s, final loss {facts['final_loss']}")
    record = dict(method=method.name, seed=seed, fingerprint=key, config=str(config.relative_to(REPO)), **facts)
    record["overrides"] = method.options
    write_json(record_path, record)
    return record


def suite_metrics(records: Iterable[dict]) -> dict[str, float]:
    by_task = {r["task"]: r["metrics"] for r in records}
    scale = {key: factor for key, _, factor in METRICS}
    return {
        key: round(float(by_task[task][name]) * scale[key], 2)
        for key, (task, name) in SUITE_METRICS.items()
        if task in by_task
    }


def in_lanes(jobs: int, work: list[Callable[[], dict]]) -> list[dict]:
    """Run ``work`` ``jobs`` at a time (each item spawns its own training process)."""
    if jobs == 1:
        return [item() for item in work]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda item: item(), work))


def run(
    out: Path,
    seeds: list[int],
    methods: tuple[str, ...] = DEFAULT_METHODS,
    tasks: tuple[str, ...] = ("finetune", "linprobe", "ade20k", "coco"),
    data_root: Path | None = None,
    amp: str | None = None,
    jobs: int = 1,
    say: Callable[[str], None] = print,
    pretrain_configs: dict[str, Path] | None = None,
    data_args: dict | None = None,
    pretrain_epochs: int | None = None,
) -> dict:
    """Every (method, seed): pretraining record + the real preset's metrics.
    ``jobs`` > 1 runs that many training processes at once, each with
    ``jobs``-th of the CPU threads. ``pretrain_configs`` / ``data_args`` /
    ``pretrain_epochs`` replace :data:`PRETRAIN_CONFIGS`, the dataset sizes and the
    pretraining length (``tools/train.py --epochs``).
    Writes ``out/results.json`` and returns it."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    if CONTROL not in methods:
        raise ValueError(f"the random-init control ({CONTROL!r}) must be among the methods: it is the reference")
    share_cpus(jobs)
    start = time.time()
    data_root = data_root or out / "data"
    data, recipe = build_data(data_root, say, data_args)
    configs = pretrain_configs or PRETRAIN_CONFIGS
    plan = [(seed, METHODS[name]) for seed in seeds for name in methods]
    controls = {
        (s, m.name): pretrain_method(m, s, data_root / "pretrain", out, recipe, configs, pretrain_epochs, say)
        for s, m in plan
        if not m.config
    }
    trained = in_lanes(
        jobs,
        [
            lambda s=s, m=m: pretrain_method(m, s, data_root / "pretrain", out, recipe, configs, pretrain_epochs, say)
            for s, m in plan
            if m.config
        ],
    )
    facts = {**controls, **{(f["seed"], f["method"]): f for f in trained}}
    runs = [(s, m, task) for s, m in plan for task in tasks]

    def evaluate(seed: int, method: Variant, task: str) -> dict:
        label = f"{method.label}, seed {seed}"
        backbone = Path(facts[seed, method.name]["backbone"])
        record, ran = run_task(task, backbone, out / "suite", "real", Path(data[DATASETS[task]]), 1, label, amp)
        verb = f"done in {record['suite_wall_time_s']:.0f}s" if ran else "recorded already"
        say(f"{method.name} seed {seed}: {task} {verb}")
        return record

    suite_records = in_lanes(jobs, [lambda s=s, m=m, t=t: evaluate(s, m, t) for s, m, t in runs])
    records = []
    for seed, method in plan:
        mine = [r for (s, m, _), r in zip(runs, suite_records, strict=True) if s == seed and m is method]
        records.append(dict(label=method.label, **facts[seed, method.name], **suite_metrics(mine)))
    summary = summarise(records, list(methods))
    result = dict(
        seeds=seeds,
        methods=list(methods),
        tasks=list(tasks),
        data=recipe,
        amp=amp,
        jobs=jobs,
        pretrain_epochs=pretrain_epochs,
        records=records,
        summary=summary,
        separation=separation(summary),
        wall_time_s=round(time.time() - start, 1),
    )
    write_json(out / "results.json", result)
    return result


def summarise(records: list[dict], methods: list[str]) -> list[dict]:
    """One row per method: mean / sample std / n of every metric over its seeds."""
    labels = {name: METHODS[name].label for name in methods}
    return summarise_over_seeds(records, methods, "method", labels, [k for k, _, _ in METRICS] + list(DIAGNOSTICS))


def separation(rows: list[dict]) -> list[dict]:
    """Per pretrained method and metric: gap to the control's mean and whether it
    exceeds the spread (``gap > std + control std``); ``None`` where either side has
    fewer than 2 seeds (one seed has no spread to exceed)."""
    control = next((r for r in rows if r["method"] == CONTROL), None)
    if control is None:
        return []
    out = []
    for row in rows:
        if row["method"] == CONTROL:
            continue
        for key, heading, _ in METRICS:
            if key not in row or key not in control:
                continue
            gap = row[key]["mean"] - control[key]["mean"]
            spread = row[key]["std"] + control[key]["std"]
            separated = gap > spread if min(row[key]["n"], control[key]["n"]) >= 2 else None
            out.append(
                dict(method=row["method"], metric=key, heading=heading, gap=gap, spread=spread, separated=separated)
            )
    return out


def measured(result: dict) -> list[tuple[str, str, float]]:
    """The metrics of the tasks that were run."""
    return [m for m in METRICS if any(m[0] in row for row in result["summary"])]


def markdown_table(result: dict) -> str:
    metrics = measured(result)
    heads = ["method", "n", *[h for _, h, _ in metrics], "pretrain s", "final loss", "teacher-student distance"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in result["summary"]:
        cells = [row["label"], str(len(row["seeds"])), *[stat_cell(row.get(k)) for k, _, _ in metrics]]
        cells += [stat_cell(row.get(k), d) for k, d in zip(DIAGNOSTICS, (0, 3, 2), strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    if result["separation"]:
        lines += [
            "",
            "| method | metric | gap to random init | spread (std + control std) | separated |",
            "|---|---|---|---|---|",
        ]
        for s in result["separation"]:
            label = METHODS[s["method"]].label
            mark = {True: "yes", False: "**no**", None: "n/a (1 seed)"}[s["separated"]]
            lines.append(f"| {label} | {s['heading']} | {s['gap']:+.1f} | {s['spread']:.1f} | {mark} |")
    epochs = result.get("pretrain_epochs")
    budget = f"stretched to {epochs} epochs" if epochs else "the configs' schedule"
    lines += ["", f"Pretraining budget, the same for every method: {budget}."]
    return "\n".join(lines) + "\n"


def csv_table(result: dict) -> str:
    return stats_csv(result["summary"], "method", [k for k, _, _ in METRICS] + list(DIAGNOSTICS))


def plot(result: dict, path: Path) -> None:
    """One panel per metric: every seed as a dot, mean ± std as a bar; the control dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["summary"]
    metrics = measured(result)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 3, 0.5 * len(rows) + 2.2), squeeze=False)
    ys = np.arange(len(rows))[::-1]
    control = next((r for r in rows if r["method"] == CONTROL), None)
    for ax, (key, heading, _) in zip(axes[0], metrics, strict=True):
        for y, row in zip(ys, rows, strict=True):
            color = "grey" if row["method"] == CONTROL else f"C{list(METHODS).index(row['method'])}"
            values = [r[key] for r in result["records"] if r["method"] == row["method"] and key in r]
            ax.scatter(values, [y] * len(values), color=color, s=12, alpha=0.6)
            if key in row:
                ax.errorbar(row[key]["mean"], y, xerr=row[key]["std"], fmt="D", color=color, capsize=4)
        if control and key in control:
            ax.axvline(control[key]["mean"], color="black", linestyle="--", linewidth=1)
        ax.set_title(heading)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(ys, [row["label"] for row in rows] if ax is axes[0][0] else [])
    seeds = ", ".join(map(str, result["seeds"]))
    fig.suptitle(f"Real-image mini suite: every seed ({seeds}) and mean ± std (dashed: random init)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the title and method labels, whatever the panel count
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    paths = {"table": out / "table.md", "csv": out / "table.csv", "plot": out / "plot.png"}
    paths["table"].write_text(markdown_table(result))
    paths["csv"].write_text(csv_table(result))
    plot(result, paths["plot"])
    return paths
