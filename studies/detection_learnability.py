"""Can the real preset's COCO-layout task be learned at its scale, and from which
starting point? (``tools/benchmark_detection_learnability.py``.)

A box AP near 0 for a ViT (as the discrimination benchmark found while the preset
trained on 4 images per step) alone cannot tell a task that nothing learns (bad
annotations, a broken head or metric, too few steps) from one that a ViT cannot
learn from where it starts. So train, with one schedule, on the same data:

- the reference: the real preset's Mask R-CNN with a ResNet-18 (GroupNorm) trained
  from scratch (``detection/configs/real/reference/``);
- the real preset's COCO config with the random-init ViT-micro the suite uses as
  its control;
- optionally any canonical backbone file (a pretrained ViT-micro), the same way;
- optionally the random-init ViT-micro with config changes (``variants``: cfg-options
  such as a normalised FPN), to test a remedy against the same reference.

Every trained detector also gets its feature scales measured
(:func:`detection.diagnostics.pyramid_scales`): the largest standard deviation of its
FPN outputs tells a detector whose maps ran away from one that trained normally.
"""

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from detection.diagnostics import pyramid_scales
from pretrain.engine.results import write_json
from studies.discrimination import build_data, default_amp, in_lanes, run_logged, share_cpus
from studies.reproduction import stat_cell, summarise_over_seeds
from suite.recipes import PRESETS
from suite.runner import REPO, data_options, prepare_backbone

REFERENCE_CONFIG = REPO / "detection/configs/real/reference/mask-rcnn_r18-gn-scratch_fpn_1xb1-4e_realsuite.py"
VIT_CONFIG = REPO / PRESETS["real"]["coco"].config
REFERENCE = "resnet18-scratch"
VIT_CONTROL = "vit-random-init"
LABELS = {REFERENCE: "ResNet-18 FPN, from scratch (reference)", VIT_CONTROL: "ViT-micro/8, random init (control)"}
METRICS = (
    ("box_ap", "box AP"),
    ("mask_ap", "mask AP"),
    ("fpn_std", "largest FPN output std"),
    ("wall_s", "train + test s"),
)
SCALE_IMAGES = 8  # validation images the trained detector's feature scales are measured on


def train_detector(
    name: str,
    config: Path,
    backbone: Path | None,
    seed: int,
    coco: Path,
    out: Path,
    epochs: int,
    say: Callable,
    options: tuple[str, ...] = (),
) -> dict:
    """One ``tools/train.py`` run (as a user runs it); its record, reused when the
    same run finished before."""
    work = out / "runs" / name / f"seed{seed}"
    cmd = [sys.executable, str(REPO / "tools/train.py"), str(config), "--work-dir", str(work), "--no-resume"]
    cmd += ["--epochs", str(epochs)] + (["--backbone", str(backbone)] if backbone else [])
    amp = default_amp()
    cmd += ["--amp", amp] if amp else []
    cmd += ["--cfg-options", f"randomness.seed={seed}", *data_options("coco", coco), *options]
    record_path = out / "records" / f"{name}_seed{seed}.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("command") == cmd[1:]:
            say(f"{name} seed {seed}: recorded already ({record_path})")
            return record
    say(f"{name} seed {seed}: training {epochs} epochs (log: {work / 'train.log'}) ...")
    start = time.time()
    run_logged(cmd, work, f"{name} seed {seed}: training")
    metrics = json.loads((work / "result.json").read_text())["metrics"]
    images = sorted((coco / "val2017").glob("*.jpg"))[:SCALE_IMAGES]
    scales = pyramid_scales(next(work.glob("*.py")), work / f"epoch_{epochs}.pth", images)
    record = dict(
        name=name,
        seed=seed,
        box_ap=round(100 * metrics["coco/bbox_mAP"], 1),
        mask_ap=round(100 * metrics["coco/segm_mAP"], 1),
        fpn_std=max(scales["neck"]),
        scales=scales,
        wall_s=round(time.time() - start, 1),
        command=cmd[1:],
        reproduce=" ".join(cmd),
    )
    say(
        f"{name} seed {seed}: box AP {record['box_ap']}, mask AP {record['mask_ap']}, "
        f"FPN output std {scales['neck']} in {record['wall_s']:.0f}s"
    )
    write_json(record_path, record)
    return record


def run(
    out: Path,
    seeds: list[int],
    epochs: int = 4,
    backbones: dict[str, Path] | None = None,
    variants: dict[str, tuple[str, ...]] | None = None,
    data_root: Path | None = None,
    jobs: int = 1,
    say: Callable[[str], None] = print,
    data_args: dict | None = None,
) -> dict:
    """Every (detector, seed) on the real suite's COCO-layout set; writes and returns
    ``out/results.json``. ``backbones``: extra canonical ViT-micro files by name;
    ``variants``: extra rows of the random-init ViT-micro with these cfg-options, by name."""
    backbones, variants = backbones or {}, variants or {}
    clash = (set(backbones) | set(variants)) & set(LABELS)
    if clash:
        raise ValueError(f"row names {sorted(clash)} are taken by the benchmark's own rows; rename them")
    if set(backbones) & set(variants):
        raise ValueError(f"row names {sorted(set(backbones) & set(variants))} name both a backbone and a variant")
    for name, options in variants.items():
        malformed = [o for o in options if "=" not in o]
        if not options or malformed:
            raise ValueError(f"variant {name}: expected KEY=VALUE cfg-options, got {list(options)}")
    for name, path in backbones.items():
        if not path.is_file():
            raise FileNotFoundError(f"backbone {name}: no file {path}")
    share_cpus(jobs)
    start = time.time()
    data, recipe = build_data(data_root or out / "data", say, data_args)
    control = prepare_backbone("random:micro-p8", out / "backbones")
    detectors = {REFERENCE: (REFERENCE_CONFIG, None, ()), VIT_CONTROL: (VIT_CONFIG, control, ())}
    detectors |= {name: (VIT_CONFIG, path, ()) for name, path in backbones.items()}
    detectors |= {name: (VIT_CONFIG, control, tuple(options)) for name, options in variants.items()}
    work = [
        lambda n=n, c=c, b=b, o=o, s=s: train_detector(n, c, b, s, data["coco"], out, epochs, say, o)
        for s in seeds
        for n, (c, b, o) in detectors.items()
    ]
    records = in_lanes(jobs, work)
    labels = LABELS | {name: f"ViT-micro/8, {name} ({path.name})" for name, path in backbones.items()}
    labels |= {name: f"ViT-micro/8, random init, {name} ({' '.join(o)})" for name, o in variants.items()}
    summary = summarise_over_seeds(records, list(detectors), "name", labels, [k for k, _ in METRICS])
    result = dict(
        seeds=seeds,
        epochs=epochs,
        data=recipe,
        jobs=jobs,
        variants={name: list(options) for name, options in variants.items()},
        records=records,
        summary=summary,
        wall_time_s=round(time.time() - start, 1),
    )
    write_json(out / "results.json", result)
    return result


def markdown_table(result: dict) -> str:
    heads = ["detector", "n", *[h for _, h in METRICS]]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in result["summary"]:
        digits = [1, 1, 1, 0]
        cells = [stat_cell(row.get(k), d) for (k, _), d in zip(METRICS, digits, strict=True)]
        lines.append("| " + " | ".join([row["label"], str(len(row["seeds"])), *cells]) + " |")
    return "\n".join(lines) + (
        f"\n\n{result['epochs']} epochs of the real preset's COCO-layout set each. Largest FPN output "
        f"std: the largest standard deviation of the trained detector's FPN levels on {SCALE_IMAGES} "
        "validation images (per level in results.json); the RPN and RoI heads read these maps.\n"
    )
