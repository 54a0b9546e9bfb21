"""The suite runner: one checkpoint in, every downstream number out.

Each task is an ordinary ``tools/train.py`` run of its stage's config, once
per seed; its ``result.json`` becomes a record in the results store, keyed by
the weights' sha256, the preset, the task, how its batch is made (processes,
accumulation, effective batch), the seed and a hash of the config and its
options, so a re-run skips what is already recorded and an interrupted suite
resumes. The config for the GPUs at hand is chosen in ``suite.recipes``; the
SLURM launcher is ``suite.slurm``.
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
from dataclasses import dataclass, field
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
from suite.recipes import PRESETS, REPO, Setup, parse_cfg_options, resolve_setup

PR_SET_PDEATHSIG = 1  # linux/prctl.h
TASKS = ("finetune", "linprobe", "ade20k", "coco")
DATASETS = {"finetune": "imagenet", "linprobe": "imagenet", "ade20k": "ade20k", "coco": "coco"}
# task -> the tasks whose output it reads (e.g. a robustness evaluation would read
# the fine-tuned checkpoint): it runs after them, and on SLURM its job waits for
# theirs (afterok). No task of the suite reads another's output today.
TASK_INPUTS: dict[str, tuple[str, ...]] = {}
REQUIRED_FIELDS = (
    "task", "metrics", "backbone", "config", "config_file", "git_commit", "versions", "hardware",
    "wall_time_s", "reproduce", "preset", "data", "label", "record_key", "recorded_at",
    "world_size", "batch_per_gpu", "accumulation", "effective_batch",
)  # fmt: skip
# Fields every record has, though they may be 0 or empty.
PRESENT_FIELDS = ("seed", "cfg_options", "recipe_changes", "amp")


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
        raise RuntimeError(f"the run in {work_dir} exited 0 but wrote no {path.name}; see its log in {work_dir}")
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


def record_key(
    weights_sha: str, preset: str, task: str, config: Path, options: list[str], setup: Setup, seed: int
) -> str:
    """The record's name: weights, preset, task, how the batch is made
    (processes x accumulation, effective batch), seed, and a hash of the config
    file and every option given to tools/train.py besides the seed."""
    h = hashlib.sha256(config.read_bytes())
    h.update("\n".join(options).encode())
    batch = f"{setup.world_size}x{setup.accumulation}-b{setup.effective_batch}"
    return f"{task}-{preset}-{weights_sha[:16]}-{batch}-seed{seed}-{h.hexdigest()[:10]}"


@dataclass(frozen=True)
class Job:
    """One training run of the suite: a task at one seed on the GPUs at hand."""

    task: str
    seed: int
    key: str
    setup: Setup
    work_dir: Path
    train_args: tuple[str, ...]  # tools/train.py's config and options
    record_fields: dict = field(hash=False)  # what the suite adds to the run's result.json


def order_tasks(tasks: tuple[str, ...], inputs: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """``tasks`` with every task after the tasks whose output it reads."""
    ordered: list[str] = []

    def visit(task: str, path: tuple[str, ...]) -> None:
        if task in ordered:
            return
        if task in path:
            raise ValueError(f"tasks read each other's output in a cycle: {' -> '.join((*path, task))}")
        for producer in inputs.get(task, ()):
            if producer not in tasks:
                raise ValueError(f"task {task} reads the output of {producer}: add {producer} to --tasks")
            visit(producer, (*path, task))
        ordered.append(task)

    for task in tasks:
        visit(task, ())
    return tuple(ordered)


def resolve_tasks(
    preset: str,
    tasks: tuple[str, ...],
    world_size: int,
    cfg_options: list[str] | tuple[str, ...] = (),
    allow_batch_change: bool = False,
    amp: str | None = None,
    inputs: dict[str, tuple[str, ...]] = TASK_INPUTS,
) -> list[tuple[str, Setup]]:
    """Each task's config and batch on ``world_size`` processes, producers first
    (:func:`suite.recipes.resolve_setup`); a bad option or batch is refused here,
    before any checkpoint is converted or job started."""
    options = parse_cfg_options(cfg_options)
    if any(key == "randomness" or key.startswith("randomness.seed") for key in options):
        raise ValueError("give seeds with --seeds 0,1,2, not as --cfg-options randomness.seed")
    return [
        (task, resolve_setup(preset, task, world_size, options, allow_batch_change, amp))
        for task in order_tasks(tasks, inputs)
    ]


def plan_jobs(
    backbone: Path,
    out: Path,
    preset: str,
    tasks: tuple[str, ...],
    data: dict[str, Path],
    gpus: int,
    label: str,
    amp: str | None = None,
    *,
    nodes: int = 1,
    seeds: list[int] | None = None,
    cfg_options: list[str] | tuple[str, ...] = (),
    allow_batch_change: bool = False,
    inputs: dict[str, tuple[str, ...]] = TASK_INPUTS,
    setups: list[tuple[str, Setup]] | None = None,
) -> list[Job]:
    """Every (task, seed) run, producers first: its config for ``gpus`` x ``nodes``
    processes (``setups`` from :func:`resolve_tasks`, resolved here if not
    given), key, work dir and tools/train.py arguments. ``cfg_options`` go to
    tools/train.py as given; ``seeds`` default to each config's own ``randomness.seed``."""
    if setups is None:
        setups = resolve_tasks(preset, tasks, gpus * nodes, cfg_options, allow_batch_change, amp, inputs)
    weights_sha = read_backbone(backbone).metadata["weights_sha256"]
    jobs = []
    for task, setup in setups:
        data_root = Path(data[DATASETS[task]])
        train_options = [*data_options(task, data_root), *cfg_options, *setup.lr_options]
        hashed = train_options + ([f"--amp={amp}"] if amp else [])
        if seeds is None and not isinstance(setup.seed, int):
            raise ValueError(f"{setup.config} sets no integer randomness.seed ({setup.seed!r}); pass --seeds")
        for seed in seeds if seeds is not None else [setup.seed]:
            key = record_key(weights_sha, preset, task, setup.config, hashed, setup, seed)
            work_dir = out / "work" / key
            args = [str(setup.config), "--backbone", str(backbone), "--work-dir", str(work_dir)]
            args += ["--amp", amp] if amp else []
            args += ["--cfg-options", *train_options, f"randomness.seed={seed}"]
            fields = dict(
                task=task,
                preset=preset,
                label=label,
                record_key=key,
                data=f"{PRESETS[preset][task].data_note} ({data_root})",
                work_dir=str(work_dir),
                recipe_config=PRESETS[preset][task].config,
                world_size=setup.world_size,
                nodes=nodes,
                gpus_per_node=gpus,
                batch_per_gpu=setup.batch_per_gpu,
                accumulation=setup.accumulation,
                effective_batch=setup.effective_batch,
                published_effective_batch=setup.published_batch,
                seed=seed,
                cfg_options=list(cfg_options),
                amp=amp,
                recipe_changes=list(setup.changes),
            )
            jobs.append(Job(task, seed, key, setup, work_dir, tuple(args), fields))
    return jobs


def local_command(job: Job) -> list[str]:
    """tools/train.py for one process, tools/dist_train.sh (torchrun) for several."""
    if job.setup.world_size > 1:
        config, *rest = job.train_args
        return ["bash", str(REPO / "tools/dist_train.sh"), config, str(job.setup.world_size), *rest]
    return [sys.executable, str(REPO / "tools/train.py"), *job.train_args]


def make_record(result: dict, fields: dict, reproduce: str, **extra) -> dict:
    """A results-store record: the run's final ``result.json`` with the suite's fields."""
    record = dict(result)
    record.update(stage=result["task"])  # the stage's own name (imagenet for both fine-tune and linear probe)
    record.update(fields, reproduce=reproduce, recorded_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra)
    return record


def record_path(out: Path, key: str) -> Path:
    return out / "results" / f"{key}.json"


def run_job(job: Job, out: Path) -> tuple[dict, bool]:
    """Run ``job`` here unless it is recorded already; returns (record, ran)."""
    path = record_path(out, job.key)
    if path.exists():
        return json.loads(path.read_text()), False
    cmd = local_command(job)
    job.work_dir.mkdir(parents=True, exist_ok=True)
    log = job.work_dir / "suite.log"
    start = time.time()
    with hold_lock(job.work_dir / ".suite.lock", f"the suite's {job.task} task"), log.open("a") as f:
        status = run_child(cmd, f)
    if status:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{job.task} failed (exit {status}); log: {log}\n{tail}")
    record = make_record(
        final_result(job.work_dir),
        job.record_fields,
        shlex.join(cmd),
        launcher="local",
        suite_wall_time_s=round(time.time() - start, 1),
    )
    write_json(path, record)
    return record, True


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
    """Run one task at its config's seed unless it is recorded already; returns
    (record, ran). ``amp`` overrides the config's precision (``tools/train.py
    --amp``; part of the key)."""
    (job,) = plan_jobs(backbone, out, preset, (task,), {DATASETS[task]: data_root}, gpus, label, amp)
    return run_job(job, out)


def headline(task: str, metrics: dict) -> str:
    if task in ("finetune", "linprobe"):
        return f"top-1 {metrics['top1']:.2f}"
    if task == "ade20k":
        return f"mIoU {metrics['mIoU']:.2f}"
    return f"box AP {100 * metrics['coco/bbox_mAP']:.1f}, mask AP {100 * metrics['coco/segm_mAP']:.1f}"


def check_request(preset: str, tasks: tuple[str, ...], data: dict[str, Path]) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
    missing = sorted({DATASETS[t] for t in tasks} - data.keys())
    if missing:
        raise ValueError(f"no data root given for {missing} (--data {missing[0]}=PATH)")


def prepare_suite(checkpoint: str, out: Path, select: str, trust_pickle: bool, label: str | None) -> tuple[Path, str]:
    """The canonical backbone file and the label of its rows in the report."""
    backbone = prepare_backbone(checkpoint, out / "backbones", select, trust_pickle)
    label = label or read_backbone(backbone).metadata.get("pretraining", {}).get("method", Path(checkpoint).stem)
    return backbone, label


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
    *,
    seeds: list[int] | None = None,
    cfg_options: list[str] | tuple[str, ...] = (),
    allow_batch_change: bool = False,
) -> list[dict]:
    """Run every (task, seed) of the suite on this machine, one after another,
    each on ``gpus`` GPUs; recorded ones are skipped. Returns their records."""
    data = data or {}
    check_request(preset, tasks, data)
    setups = resolve_tasks(preset, tasks, gpus, cfg_options, allow_batch_change, amp)
    backbone, label = prepare_suite(checkpoint, out, select, trust_pickle, label)
    jobs = plan_jobs(
        backbone, out, preset, tasks, data, gpus, label, amp,
        seeds=seeds, cfg_options=cfg_options, setups=setups,
    )  # fmt: skip
    records = []
    for i, job in enumerate(jobs, 1):
        name = f"{label}: {job.task}" + (f" seed {job.seed}" if seeds is not None else "")
        print(f"[suite {i}/{len(jobs)}] {name} ({job.setup.config.name}, batch {job.setup.arithmetic}) ...", flush=True)
        record, ran = run_job(job, out)
        verb = f"done in {record['suite_wall_time_s']:.0f}s" if ran else "already recorded, skipped"
        print(f"[suite {i}/{len(jobs)}] {name} {verb}: {headline(job.task, record['metrics'])}", flush=True)
        records.append(record)
    return records


def describe_arch(arch: BackboneArch) -> str:
    sizes = {192: "ViT-Ti", 384: "ViT-S", 768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}
    return f"{sizes.get(arch.embed_dim, f'ViT-{arch.embed_dim}')}/{arch.patch_size}"
