"""The suite runner: one checkpoint in, every downstream number out.

Each task is an ordinary ``tools/train.py`` run of its stage's config; its
``result.json`` becomes a record in the results store, keyed by the weights'
sha256, the preset, the task and a hash of the config and its options, so a
re-run skips what is already recorded and an interrupted suite resumes.
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pretrain.checkpoints import (
    convert,
    load_checkpoint_file,
    read_backbone,
    read_metadata,
    save_backbone,
)
from pretrain.checkpoints.canonical import BackboneArch, sha256_file
from pretrain.engine.lock import hold_lock
from pretrain.engine.results import write_json

REPO = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TASKS = ("finetune", "linprobe", "ade20k", "coco")
DATASETS = {"finetune": "imagenet", "linprobe": "imagenet", "ade20k": "ade20k", "coco": "coco"}


@dataclass(frozen=True)
class Recipe:
    config: str
    data_note: str  # what the numbers were measured on, for the report


PRESETS: dict[str, dict[str, Recipe]] = {
    "mini": {
        "finetune": Recipe("classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py", "synthetic"),
        "linprobe": Recipe("classification/configs/vit-tiny-p16_linprobe_1xb64-20e_synthetic.py", "synthetic"),
        "ade20k": Recipe("segmentation/configs/upernet_vit-tiny-p16_1xb4-40it_synthetic-128x128.py", "synthetic"),
        "coco": Recipe("detection/configs/mask-rcnn_vit-tiny-p16_fpn_1xb2-2e_synthetic.py", "synthetic"),
    },
    # The full recipes shrunk (model, resolution, schedule) for the real-image mini suite
    # (pretrain/data/real_suite.py; a ViT-micro with 8 px patches): the same pipelines,
    # losses and metrics; tests/test_real_suite.py lists the keys that may differ.
    "real": {
        "finetune": Recipe("classification/configs/real/vit-micro-p8_finetune_1xb128-20e_realsuite64.py", "real"),
        "linprobe": Recipe("classification/configs/real/vit-micro-p8_linprobe_1xb256-30e_realsuite64.py", "real"),
        "ade20k": Recipe("segmentation/configs/real/upernet_vit-micro-p8_1xb4-300it_realsuite-128x128.py", "real"),
        "coco": Recipe("detection/configs/real/mask-rcnn_vit-micro-p8_fpn_1xb4-4e_realsuite.py", "real"),
    },
    "full": {
        "finetune": Recipe("classification/configs/vit-base-p16_finetune_8xb128-amp-100e_in1k.py", "ImageNet-1k"),
        "linprobe": Recipe("classification/configs/vit-base-p16_linprobe_8xb2048-amp-90e_in1k.py", "ImageNet-1k"),
        "ade20k": Recipe("segmentation/configs/upernet_vit-b16_8xb2-amp-160k_ade20k-512x512.py", "ADE20K"),
        "coco": Recipe("detection/configs/mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py", "COCO 2017"),
    },
}
REQUIRED_FIELDS = (
    "task", "metrics", "backbone", "config", "config_file", "git_commit", "versions", "hardware",
    "wall_time_s", "reproduce", "preset", "data", "label", "record_key", "recorded_at",
)  # fmt: skip


def data_options(task: str, root: Path) -> list[str]:
    """cfg-options pointing a stage's loaders (and COCO evaluator) at ``root``."""
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    if DATASETS[task] == "imagenet":
        return [f"{loader}.dataset.data_root={root}" for loader in loaders]
    if task == "ade20k":
        return [f"{loader}.dataset.data_root={root / 'ADEChallengeData2016'}" for loader in loaders]
    ann = f"{root}/annotations/instances_val2017.json"
    return [f"{loader}.dataset.data_root={root}/" for loader in loaders] + [
        f"val_evaluator.ann_file={ann}",
        f"test_evaluator.ann_file={ann}",
    ]


def prepare_backbone(checkpoint: str, out: Path, select: str = "student", trust_pickle: bool = False) -> Path:
    """A canonical file for ``checkpoint``: used as is, converted once, or - for
    ``random:<arch>`` - a randomly initialised encoder (the control)."""
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint.startswith("random:"):
        from pretrain.models import build_vit

        arch = checkpoint.split(":", 1)[1]
        path = out / f"random-{arch}.safetensors"
        if not path.exists():
            import torch

            torch.manual_seed(0)
            vit = build_vit(arch)
            conversion = convert(vit.state_dict())
            conversion.backbone.metadata.update(
                pretraining={"method": "random init", "epochs": 0}, source={"file": checkpoint, "seed": 0}
            )
            save_backbone(path, conversion.backbone)
        return path
    src = Path(checkpoint)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if src.suffix == ".safetensors" and read_metadata(src):
        read_backbone(src)  # validates format and weights hash
        return src
    digest = sha256_file(src)
    path = out / f"{src.stem}-{select}-{digest[:12]}.safetensors"
    if not path.exists():
        conversion = convert(load_checkpoint_file(src, trust_pickle), select)
        conversion.backbone.metadata["source"] = {"file": src.name, "sha256": digest}
        save_backbone(path, conversion.backbone)
        print(f"[suite] converted {src} -> {path}\n{conversion.report()}", flush=True)
    return path


def final_result(work_dir: Path) -> dict:
    """The run's ``result.json`` if it evaluates the run's last training
    iteration; anything else (no record, a record of an earlier epoch) is an error."""
    path = work_dir / "result.json"
    if not path.exists():
        raise RuntimeError(f"the run in {work_dir} exited 0 but wrote no {path.name}; see {work_dir / 'suite.log'}")
    record = json.loads(path.read_text())
    if record.get("split") != "val" or record.get("iter") is None or record.get("iter") != record.get("max_iters"):
        raise RuntimeError(
            f"{path} evaluates iteration {record.get('iter')} of {record.get('max_iters')}, not the end of "
            f"training; not recorded. Rerun the suite: the task resumes and evaluates its last iteration."
        )
    return record


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the suite process
    dies, even by SIGKILL, so no trainer outlives its suite."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def run_child(cmd: list[str], log) -> int:
    """Run one task's trainer with its output in ``log``. The trainer stops with
    the suite: on an interrupt (KeyboardInterrupt) it is terminated here, on any
    death of the suite (SIGTERM, SIGKILL) Linux signals it (see _die_with_parent;
    the calling thread waits for the child, so the signal comes with the process)."""
    child = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def record_key(weights_sha: str, preset: str, task: str, config: Path, options: list[str]) -> str:
    h = hashlib.sha256(config.read_bytes())
    h.update("\n".join(options).encode())
    return f"{task}-{preset}-{weights_sha[:16]}-{h.hexdigest()[:10]}"


def run_task(
    task: str,
    backbone: Path,
    out: Path,
    preset: str,
    data_root: Path,
    gpus: int,
    label: str,
    amp: str | None = None,
) -> tuple[dict, bool]:
    """Run one task unless it is recorded already; returns (record, ran). ``amp``
    overrides the config's precision (``tools/train.py --amp``; part of the key)."""
    recipe = PRESETS[preset][task]
    config = REPO / recipe.config
    options = data_options(task, data_root)
    weights_sha = read_backbone(backbone).metadata["weights_sha256"]
    key = record_key(weights_sha, preset, task, config, options + ([f"--amp={amp}"] if amp else []))
    record_path = out / "results" / f"{key}.json"
    if record_path.exists():
        return json.loads(record_path.read_text()), False
    work_dir = out / "work" / key
    train_args = [str(config), "--backbone", str(backbone), "--work-dir", str(work_dir)]
    train_args += ["--amp", amp] if amp else []
    train_args += ["--cfg-options", *options]
    if gpus > 1:
        cmd = ["bash", str(REPO / "tools/dist_train.sh"), str(config), str(gpus), *train_args[1:]]
    else:
        cmd = [sys.executable, str(REPO / "tools/train.py"), *train_args]
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "suite.log"
    start = time.time()
    with hold_lock(work_dir / ".suite.lock", f"the suite's {task} task"), log.open("a") as f:
        status = run_child(cmd, f)
    if status:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{task} failed (exit {status}); log: {log}\n{tail}")
    record = final_result(work_dir)
    record.update(
        stage=record["task"],  # the stage's own name (imagenet for both fine-tune and linear probe)
        task=task,
        preset=preset,
        label=label,
        record_key=key,
        data=f"{recipe.data_note} ({data_root})",
        reproduce=shlex.join(cmd),
        work_dir=str(work_dir),
        suite_wall_time_s=round(time.time() - start, 1),
        recorded_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_json(record_path, record)
    return record, True


def headline(task: str, metrics: dict) -> str:
    if task in ("finetune", "linprobe"):
        return f"top-1 {metrics['top1']:.2f}"
    if task == "ade20k":
        return f"mIoU {metrics['mIoU']:.2f}"
    return f"box AP {100 * metrics['coco/bbox_mAP']:.1f}, mask AP {100 * metrics['coco/segm_mAP']:.1f}"


def run_suite(
    checkpoint: str,
    out: Path,
    preset: str = "mini",
    tasks: tuple[str, ...] = TASKS,
    data: dict[str, Path] | None = None,
    gpus: int = 1,
    label: str | None = None,
    select: str = "student",
    trust_pickle: bool = False,
    amp: str | None = None,
) -> list[dict]:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
    data = data or {}
    missing = sorted({DATASETS[t] for t in tasks} - data.keys())
    if missing:
        raise ValueError(f"no data root given for {missing} (--data {missing[0]}=PATH)")
    backbone = prepare_backbone(checkpoint, out / "backbones", select, trust_pickle)
    label = label or read_backbone(backbone).metadata.get("pretraining", {}).get("method", Path(checkpoint).stem)
    records = []
    for i, task in enumerate(tasks, 1):
        print(f"[suite {i}/{len(tasks)}] {label}: {task} ...", flush=True)
        record, ran = run_task(task, backbone, out, preset, Path(data[DATASETS[task]]), gpus, label, amp)
        verb = f"done in {record['suite_wall_time_s']:.0f}s" if ran else "already recorded, skipped"
        print(f"[suite {i}/{len(tasks)}] {label}: {task} {verb}: {headline(task, record['metrics'])}", flush=True)
        records.append(record)
    return records


def describe_arch(arch: BackboneArch) -> str:
    sizes = {192: "ViT-Ti", 384: "ViT-S", 768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}
    return f"{sizes.get(arch.embed_dim, f'ViT-{arch.embed_dim}')}/{arch.patch_size}"
