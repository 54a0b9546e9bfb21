"""Paper-style tables (markdown + CSV) and plots from the results store, with this
suite's measured rows beside the paper's reported ones.

A measured row is one label run on one number of GPUs with one set of
--cfg-options and --amp; each of its cells is the mean ± sample standard
deviation over the seeds recorded for it, with their number n. The row says how
its batch was made and what differs from the recipe."""

import csv
import json
import statistics
from pathlib import Path

from pretrain.checkpoints.canonical import BackboneArch
from suite.runner import PRESENT_FIELDS, REQUIRED_FIELDS, describe_arch

PAPER_RESULTS = Path(__file__).resolve().parents[1] / "docs/paper_results.json"
ABLATION_PREFIX = "ablation: "  # run_suite --label "ablation: full image" puts a run in Table 5
MISSING = "\u2013"  # an en dash marks a value the paper or this run does not have
BATCH_HEADER = "Batch (GPUs x per GPU x accum.)"
CHANGES_HEADER = "Changes from the recipe"


class ProvenanceError(ValueError):
    """A result record lacks the fields that say where its numbers come from."""


def load_records(results_dir: str | Path) -> list[dict]:
    """Every ``*.json`` record of the store; one without full provenance is refused."""
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        missing = [f for f in REQUIRED_FIELDS if not record.get(f)] + [f for f in PRESENT_FIELDS if f not in record]
        backbone = record.get("backbone") or {}
        if not backbone.get("weights_sha256"):
            missing.append("backbone.weights_sha256")
        if missing:
            raise ProvenanceError(f"{path}: no provenance field(s) {missing}; re-run it with tools/run_suite.py")
        records.append(record)
    return records


def _measured_source(record: dict) -> str:
    arch = BackboneArch.from_dict(record["backbone"]["arch"])
    return f"this suite: {record['data'].split(' (')[0]} data, {record['preset']} preset, {describe_arch(arch)}"


def _variant(record: dict) -> tuple:
    """What the records of one row share beyond the label: the processes and
    what the user chose (cfg-options, precision); the seed is what varies."""
    return record["world_size"], tuple(record["cfg_options"]), record["amp"]


def _by_row(records: list[dict], tasks: tuple[str, ...]) -> dict[tuple, dict[str, list[dict]]]:
    """(label, variant) -> task -> its latest record per seed; rows in the order they were first recorded."""
    rows: dict[tuple, dict[str, dict[int, dict]]] = {}
    for record in sorted(records, key=lambda r: r["recorded_at"]):
        if record["task"] in tasks:
            cells = rows.setdefault((record["label"], _variant(record)), {})
            cells.setdefault(record["task"], {})[record["seed"]] = record
    return {row: {task: list(by_seed.values()) for task, by_seed in cells.items()} for row, cells in rows.items()}


def _fmt(value) -> str:
    return MISSING if value is None else f"{value:.1f}"


def _fmt_epochs(value) -> str:
    return MISSING if value is None else str(value)


def _cell(values: list[float]) -> str:
    """Mean ± sample standard deviation (n - 1) over seeds, and n."""
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.mean(values):.1f} \u00b1 {statistics.stdev(values):.1f} (n={len(values)})"


def _batch(cells: dict[str, list[dict]], tasks: tuple[str, ...]) -> str:
    """How each task's batch was made, e.g. "8x128x1 = 1024" (prefixed by the task in a table of several)."""
    parts = []
    for task, records in sorted(cells.items(), key=lambda item: tasks.index(item[0])):
        made = sorted(
            {f"{r['world_size']}x{r['batch_per_gpu']}x{r['accumulation']} = {r['effective_batch']}" for r in records}
        )
        parts.append((f"{task} " if len(tasks) > 1 else "") + ", ".join(made))
    return "; ".join(parts)


def _changes(cells: dict[str, list[dict]]) -> str:
    changes = sorted({change for records in cells.values() for r in records for change in r["recipe_changes"]})
    return "; ".join(changes) or "none"


TABLES = {
    "imagenet": dict(
        title="Table 2 - ImageNet-1k top-1 (%)",
        header=["Method", "Epochs", "Fine-tune", "Linear"],
        tasks=("finetune", "linprobe"),
        paper_cols=("finetune_top1", "linear_top1"),
        columns=[("finetune", lambda r: r["metrics"]["top1"]), ("linprobe", lambda r: r["metrics"]["top1"])],
    ),
    "ade20k": dict(
        title="Table 3 - ADE20K semantic segmentation, UperNet, mIoU (%)",
        header=["Method", "Epochs", "mIoU", "mIoU ms+flip"],
        tasks=("ade20k", "ade20k-msflip"),
        paper_cols=("mIoU", "mIoU_msflip"),
        columns=[("ade20k", lambda r: r["metrics"]["mIoU"]), ("ade20k-msflip", lambda r: r["metrics"]["mIoU"])],
    ),
    "ablations": dict(
        title="Table 5 - teacher inputs and normalisation, ImageNet fine-tune top-1 (%)",
        header=["Teacher input", "Epochs", "Fine-tune"],
        tasks=("finetune",),
        paper_cols=("finetune_top1",),
        columns=[("finetune", lambda r: r["metrics"]["top1"])],
        label_prefix=ABLATION_PREFIX,  # only runs labelled "ablation: <variant>"
    ),
    "coco": dict(
        title="Table 4 - COCO Mask R-CNN, box and mask AP (%)",
        header=["Method", "Epochs", "AP box", "AP50 box", "AP75 box", "AP mask", "AP50 mask", "AP75 mask"],
        tasks=("coco",),
        paper_cols=("AP_box", "AP50_box", "AP75_box", "AP_mask", "AP50_mask", "AP75_mask"),
        columns=[
            ("coco", lambda r, key=f"coco/{kind}_{m}": 100 * r["metrics"][key])
            for kind in ("bbox", "segm")
            for m in ("mAP", "mAP_50", "mAP_75")
        ],
    ),
}


# The broader protocols (issue #14): printed where this suite has runs of them.
TABLES.update(
    knn=dict(
        title="k-NN on frozen features (class token, cosine, T = 0.07), ImageNet-1k top-1 (%)",
        header=["Method", "Epochs", "k = 20", "k = 200"],
        tasks=("knn",),
        paper_cols=("top1_k20", "top1_k200"),
        columns=[("knn", lambda r: r["metrics"]["top1_k20"]), ("knn", lambda r: r["metrics"]["top1_k200"])],
        optional=True,
    ),
    lowshot=dict(
        title="Low-shot ImageNet-1k, logistic regression on frozen features, top-1 (%)",
        header=["Method", "Epochs", "1 % labels", "10 % labels"],
        tasks=("lowshot",),
        paper_cols=("top1_1pct", "top1_10pct"),
        columns=[("lowshot", lambda r: r["metrics"]["top1_1pct"]), ("lowshot", lambda r: r["metrics"]["top1_10pct"])],
        optional=True,
    ),
    attentive=dict(
        title="Attentive probing (CAE) beside linear probing, ImageNet-1k top-1 (%)",
        header=["Method", "Epochs", "Linear", "Attentive"],
        tasks=("linprobe", "attentive"),
        paper_cols=("linear_top1", "attentive_top1"),
        columns=[("linprobe", lambda r: r["metrics"]["top1"]), ("attentive", lambda r: r["metrics"]["top1"])],
        optional=True,
        needs=("attentive",),  # a row only for a label with an attentive run
    ),
    ade20k_linear=dict(
        title="ADE20K, linear head on frozen features (DINOv2 protocol), mIoU (%)",
        header=["Method", "Epochs", "mIoU"],
        tasks=("ade20k-linear",),
        paper_cols=("mIoU",),
        columns=[("ade20k-linear", lambda r: r["metrics"]["mIoU"])],
        optional=True,
    ),
    robustness=dict(
        title="Robustness of the fine-tuned classifier: top-1 (%) on IN-A, IN-R, IN-Sketch, IN-V2; "
        "IN-C mean corruption error (%, lower is better)",
        header=["Method", "Epochs", "IN-A", "IN-R", "IN-Sketch", "IN-V2", "IN-C mCE"],
        tasks=("robustness",),
        paper_cols=("imagenet_a_top1", "imagenet_r_top1", "sketch_top1", "v2_top1", "imagenet_c_mce"),
        columns=[
            ("robustness", lambda r, key=key: r["metrics"][key])
            for key in ("imagenet_a_top1", "imagenet_r_top1", "sketch_top1", "v2_top1", "imagenet_c_mce")
        ],
        optional=True,
    ),
)
REPORT_ORDER = ("imagenet", "ade20k", "coco", "ablations", "knn", "lowshot", "attentive", "ade20k_linear", "robustness")


def build_table(name: str, records: list[dict], paper: dict) -> list[list[str]]:
    """Rows (header first): the paper's rows, then one measured row per label and
    variant (:func:`_variant`), its cells aggregated over seeds."""
    spec = TABLES[name]
    rows = [[*spec["header"], BATCH_HEADER, CHANGES_HEADER, "Source"]]
    for row in paper[name]["rows"]:
        rows.append(
            [
                row["method"],
                _fmt_epochs(row.get("epochs")),
                *(_fmt(row.get(c)) for c in spec["paper_cols"]),
                MISSING,
                MISSING,
                row.get("source", "paper"),
            ]
        )
    prefix = spec.get("label_prefix", "")
    for (label, _), cells in _by_row(records, spec["tasks"]).items():
        if not label.startswith(prefix) or not any(task in cells for task in spec.get("needs", spec["tasks"])):
            continue
        any_record = next(iter(cells.values()))[0]
        epochs = (any_record["backbone"].get("pretraining") or {}).get("epochs")
        rows.append(
            [
                label.removeprefix(prefix),
                MISSING if epochs is None else str(epochs),
                *(_cell([metric(r) for r in cells.get(task, [])]) for task, metric in spec["columns"]),
                _batch(cells, spec["tasks"]),
                _changes(cells),
                _measured_source(any_record),
            ]
        )
    return rows


def efficiency_table(benchmark: dict) -> list[list[str]]:
    meta = benchmark["meta"]
    header = ["Teacher input", "Step time vs MAE", "Paper", "Peak memory vs MAE", "Paper", "FLOPs vs MAE"]
    rows = [header]

    def ratio(x: float | None) -> str:
        return MISSING if x is None else f"x{x:.2f}"

    for r in benchmark["results"]:
        rows.append(
            [
                r["variant"],
                ratio(r["time_vs_mae"]),
                ratio(r["paper_time_vs_mae"]),
                ratio(r["mem_vs_mae"]),
                ratio(r["paper_mem_vs_mae"]),
                ratio(r["flops_vs_mae"]),
            ]
        )
    rows.append(
        [
            f"measured: ViT-{meta['arch']} {meta['img_size']}px, batch {meta['batch_size']}, "
            f"{meta['device_name']} {meta['precision']}",
            "",
            "",
            "",
            "",
            "",
        ]
    )
    return rows


def to_markdown(title: str, rows: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def plot_bars(name: str, rows: list[list[str]], out: Path) -> Path | None:
    """Bar chart of the measured rows' metrics (paper rows are on another scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows[1:] if r[-1].startswith("this suite")]
    if not measured:
        return None
    metrics = rows[0][2 : 2 + len(TABLES[name]["columns"])]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(metrics) * len(measured) / 2, 3.2))
    width = 0.8 / len(measured)
    for i, row in enumerate(measured):
        values = [float(v.split()[0]) if v != MISSING else 0.0 for v in row[2 : 2 + len(metrics)]]  # the mean
        ax.bar([m + i * width for m in range(len(metrics))], values, width, label=row[0])
    ax.set_xticks([m + width * (len(measured) - 1) / 2 for m in range(len(metrics))], metrics)
    ax.set_title(TABLES[name]["title"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{name}_bars.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(records: list[dict], out: Path) -> list[Path]:
    """Training loss per iteration, one figure per task, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task in sorted({r["task"] for r in records}):
        fig, ax = plt.subplots(figsize=(5, 3))
        drawn = False
        for record in (r for r in records if r["task"] == task):
            for scalars in sorted(Path(record.get("work_dir", "/nonexistent")).glob("*/vis_data/scalars.json")):
                points = [json.loads(line) for line in scalars.read_text().splitlines()]
                points = [p for p in points if "loss" in p and "step" in p]
                if points:
                    name = f"{record['label']} seed {record['seed']}"
                    ax.plot([p["step"] for p in points], [p["loss"] for p in points], label=name)
                    drawn = True
        if drawn:
            ax.set_xlabel("iteration")
            ax.set_ylabel("training loss")
            ax.set_title(task)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out / f"curve_{task}.png"
            fig.savefig(path, dpi=120)
            paths.append(path)
        plt.close(fig)
    return paths


def write_report(results_dir: str | Path, out: str | Path, benchmark: str | Path | None = None) -> Path:
    """Markdown + CSV for Tables 2-4 (and Table 1 from a benchmark JSON), plus plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(results_dir)
    paper = json.loads(PAPER_RESULTS.read_text())
    parts = ["# SdAE suite report", "", f"Paper rows: {paper['source']}", ""]
    if benchmark:
        rows = efficiency_table(json.loads(Path(benchmark).read_text()))
        parts.append(to_markdown("Table 1 - pretraining cost of the teacher inputs", rows))
        _write_csv(out / "table1_efficiency.csv", rows)
    for name in REPORT_ORDER:
        spec = TABLES[name]
        needed = spec.get("needs", spec["tasks"])
        if spec.get("optional") and not any(r["task"] in needed for r in records):
            continue  # the broader protocols only where they were run
        rows = build_table(name, records, paper)
        if name == "ablations" and not any(r[-1].startswith("this suite") for r in rows[1:]):
            continue  # Table 5 only where ablation runs exist
        parts.append(to_markdown(TABLES[name]["title"], rows))
        if paper[name].get("note"):
            parts.append(f"Paper rows: {paper[name]['note']}\n")
        _write_csv(out / f"table_{name}.csv", rows)
        bars = plot_bars(name, rows, out)
        if bars:
            parts.append(f"![{name}]({bars.name})\n")
    for curve in plot_training_curves(records, out):
        parts.append(f"![{curve.stem}]({curve.name})\n")
    report = out / "report.md"
    report.write_text("\n".join(parts))
    return report


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
