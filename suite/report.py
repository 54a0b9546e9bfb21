"""Paper-style tables (markdown + CSV) and plots from the results store, with this
suite's measured rows beside the paper's reported ones."""

import csv
import json
from pathlib import Path

from pretrain.checkpoints.canonical import BackboneArch
from suite.runner import REQUIRED_FIELDS, describe_arch

PAPER_RESULTS = Path(__file__).resolve().parents[1] / "docs/paper_results.json"
ABLATION_PREFIX = "ablation: "  # run_suite --label "ablation: full image" puts a run in Table 5
MISSING = "\u2013"  # an en dash marks a value the paper or this run does not have


class ProvenanceError(ValueError):
    """A result record lacks the fields that say where its numbers come from."""


def load_records(results_dir: str | Path) -> list[dict]:
    """Every ``*.json`` record of the store; one without full provenance is refused."""
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        missing = [f for f in REQUIRED_FIELDS if not record.get(f)]
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


def _by_label(records: list[dict], tasks: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """label -> task -> its latest record; labels in the order they were first recorded."""
    table: dict[str, dict[str, dict]] = {}
    for record in sorted(records, key=lambda r: r["recorded_at"]):
        if record["task"] in tasks:
            table.setdefault(record["label"], {})[record["task"]] = record
    return table


def _fmt(value) -> str:
    return MISSING if value is None else f"{value:.1f}"


TABLES = {
    "imagenet": dict(
        title="Table 2 - ImageNet-1k top-1 (%)",
        header=["Method", "Epochs", "Fine-tune", "Linear", "Source"],
        tasks=("finetune", "linprobe"),
        paper_cols=("finetune_top1", "linear_top1"),
        measured=lambda t: [
            t["finetune"]["metrics"]["top1"] if "finetune" in t else None,
            t["linprobe"]["metrics"]["top1"] if "linprobe" in t else None,
        ],
    ),
    "ade20k": dict(
        title="Table 3 - ADE20K semantic segmentation, mIoU (%)",
        header=["Method", "Epochs", "mIoU", "Source"],
        tasks=("ade20k",),
        paper_cols=("mIoU",),
        measured=lambda t: [t["ade20k"]["metrics"]["mIoU"]],
    ),
    "ablations": dict(
        title="Table 5 - teacher inputs and normalisation, ImageNet fine-tune top-1 (%)",
        header=["Teacher input", "Epochs", "Fine-tune", "Source"],
        tasks=("finetune",),
        paper_cols=("finetune_top1",),
        measured=lambda t: [t["finetune"]["metrics"]["top1"]],
        label_prefix=ABLATION_PREFIX,  # only runs labelled "ablation: <variant>"
    ),
    "coco": dict(
        title="Table 4 - COCO Mask R-CNN, box and mask AP (%)",
        header=["Method", "Epochs", "AP box", "AP50 box", "AP75 box", "AP mask", "AP50 mask", "AP75 mask", "Source"],
        tasks=("coco",),
        paper_cols=("AP_box", "AP50_box", "AP75_box", "AP_mask", "AP50_mask", "AP75_mask"),
        measured=lambda t: [
            100 * t["coco"]["metrics"][f"coco/{kind}_{m}"]
            for kind in ("bbox", "segm")
            for m in ("mAP", "mAP_50", "mAP_75")
        ],
    ),
}


def build_table(name: str, records: list[dict], paper: dict) -> list[list[str]]:
    """Rows (header first): the paper's rows, then one measured row per label."""
    spec = TABLES[name]
    rows = [spec["header"]]
    for row in paper[name]["rows"]:
        rows.append([row["method"], str(row["epochs"]), *(_fmt(row[c]) for c in spec["paper_cols"]), "paper"])
    prefix = spec.get("label_prefix", "")
    for label, tasks in _by_label(records, spec["tasks"]).items():
        if not label.startswith(prefix):
            continue
        label = label.removeprefix(prefix)
        any_record = next(iter(tasks.values()))
        epochs = (any_record["backbone"].get("pretraining") or {}).get("epochs")
        rows.append(
            [
                label,
                MISSING if epochs is None else str(epochs),
                *(_fmt(v) for v in spec["measured"](tasks)),
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
    metrics = rows[0][2:-1]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(metrics) * len(measured) / 2, 3.2))
    width = 0.8 / len(measured)
    for i, row in enumerate(measured):
        values = [float(v) if v != MISSING else 0.0 for v in row[2:-1]]
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
                    ax.plot([p["step"] for p in points], [p["loss"] for p in points], label=record["label"])
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
    for name in ("imagenet", "ade20k", "coco", "ablations"):
        rows = build_table(name, records, paper)
        if name == "ablations" and not any(r[-1].startswith("this suite") for r in rows[1:]):
            continue  # Table 5 only where ablation runs exist
        parts.append(to_markdown(TABLES[name]["title"], rows))
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
