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


@dataclass(frozen=True)
class TaskSpec:
    """What one task of the suite runs.

    ``tool``: its entry point under tools/ - ``train.py`` (a training run whose
    last iteration is validated), ``eval_features.py`` (frozen-feature protocols
    that train nothing through mmengine) or an evaluation of another task's
    checkpoint (``test.py``, ``eval_robustness.py``), in which case ``reads`` names
    that task and ``checkpoint`` which of its checkpoints (``best`` by the
    validation metric, or ``last``): the consumer runs after it, with its config,
    and on SLURM its job waits for the producer's (afterok)."""

    dataset: str  # the --data root it reads
    tool: str = "train.py"
    reads: str | None = None
    checkpoint: str | None = None
    tool_args: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        return self.tool == "train.py"


TASK_SPECS: dict[str, TaskSpec] = {
    # the paper's four protocols
    "finetune": TaskSpec("imagenet"),
    "linprobe": TaskSpec("imagenet"),
    "ade20k": TaskSpec("ade20k"),
    "coco": TaskSpec("coco"),
    # frozen-feature protocols and evaluations of trained checkpoints
    "knn": TaskSpec("imagenet", "eval_features.py"),
    "lowshot": TaskSpec("imagenet", "eval_features.py"),
    "attentive": TaskSpec("imagenet"),
    "ade20k-linear": TaskSpec("ade20k"),
    # the ADE20K UperNet number again, multi-scale + flip, on the checkpoint the ade20k task
    # recorded (its last iteration's)
    "ade20k-msflip": TaskSpec("ade20k", "test.py", reads="ade20k", checkpoint="last", tool_args=("--tta",)),
    # the fine-tuned classifier on ImageNet-A/-R/-Sketch/-V2/-C: its best checkpoint, as the
    # papers that report robustness evaluate the fine-tuned model they report on ImageNet
    "robustness": TaskSpec("robustness", "eval_robustness.py", reads="finetune", checkpoint="best"),
}
TASKS = ("finetune", "linprobe", "ade20k", "coco")  # the default: the paper's protocols
ALL_TASKS = tuple(TASK_SPECS)
DATASETS = {task: spec.dataset for task, spec in TASK_SPECS.items()}
DATA_NAMES = tuple(dict.fromkeys(DATASETS.values()))
# task -> the tasks whose output it reads: it runs after them (on SLURM: afterok).
TASK_INPUTS: dict[str, tuple[str, ...]] = {task: (spec.reads,) for task, spec in TASK_SPECS.items() if spec.reads}
REQUIRED_FIELDS = (
    "task", "metrics", "backbone", "config", "config_file", "git_commit", "versions", "hardware",
    "wall_time_s", "reproduce", "preset", "data", "label", "record_key", "recorded_at",
    "world_size", "batch_per_gpu", "accumulation", "effective_batch",
)  # fmt: skip
# Fields every record has, though they may be 0 or empty.
PRESENT_FIELDS = ("seed", "cfg_options", "recipe_changes", "amp")
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def data_options(task: str, root: Path, loaders: tuple[str, ...] = LOADERS) -> list[str]:
    """cfg-options pointing a task's ``loaders`` (those its config has) and COCO
    evaluator at ``root``; the robustness sets' root is an option of their tool."""
    dataset = DATASETS[task]
    if dataset == "imagenet":
        return [f"{loader}.dataset.data_root={root}" for loader in loaders]
    if dataset == "ade20k":
        return [f"{loader}.dataset.data_root={root / 'ADEChallengeData2016'}" for loader in loaders]
    if dataset == "robustness":
        return []  # tools/eval_robustness.py takes its root as an argument (data_args)
    ann = f"{root}/annotations/instances_val2017.json"
    return [f"{loader}.dataset.data_root={root}/" for loader in loaders] + [
        f"val_evaluator.ann_file={ann}",
        f"test_evaluator.ann_file={ann}",
    ]


def data_args(task: str, root: Path) -> list[str]:
    """Arguments of a task's tool that say where its data is, beside the cfg-options:
    the robustness sets' root, and the map of the classifier's classes to ImageNet
    wnids where the root has one (the generated mini sets write ``class_map.json``;
    a classifier of the 1000 ImageNet classes needs none)."""
    if DATASETS[task] != "robustness":
        return []
    class_map = root / "class_map.json"
    return ["--data-root", str(root)] + (["--class-map", str(class_map)] if class_map.is_file() else [])


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


def final_result(work_dir: Path, trains: bool = True) -> dict:
    """The run's ``result.json`` if it is the run's final evaluation: for a
    training run (``trains``) a validation of its last iteration, for an
    evaluation a complete one (``split`` "test", written at its end); anything
    else (no record, a record of an earlier epoch) is an error."""
    path = work_dir / "result.json"
    if not path.exists():
        raise RuntimeError(f"the run in {work_dir} exited 0 but wrote no {path.name}; see its log in {work_dir}")
    record = json.loads(path.read_text())
    if not trains:
        if record.get("split") != "test":
            raise RuntimeError(f"{path} is not the record of a complete evaluation (split {record.get('split')!r})")
        return record
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
    """One run of the suite: a task at one seed, training on the GPUs at hand or
    evaluating in one process."""

    task: str
    seed: int
    key: str
    setup: Setup
    work_dir: Path
    tool_args: tuple[str, ...]  # the task's tool's config, checkpoint and options
    record_fields: dict = field(hash=False)  # what the suite adds to the run's result.json

    @property
    def spec(self) -> TaskSpec:
        return TASK_SPECS[self.task]

    @property
    def processes(self) -> int:
        """Training runs data-parallel on the setup's processes; evaluations in one."""
        return self.setup.world_size if self.spec.trains else 1


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
    jobs: list[Job] = []
    producers: dict[tuple[str, int], Job] = {}
    for task, setup in setups:
        spec = TASK_SPECS[task]
        data_root = Path(data[DATASETS[task]])
        tool_options = [*data_options(task, data_root, setup.loaders), *cfg_options, *setup.lr_options]
        tool_data_args = data_args(task, data_root)
        hashed = tool_options + tool_data_args + ([f"--amp={amp}"] if amp else [])
        if seeds is None and not isinstance(setup.seed, int):
            raise ValueError(f"{setup.config} sets no integer randomness.seed ({setup.seed!r}); pass --seeds")
        for seed in seeds if seeds is not None else [setup.seed]:
            producer = producers.get((spec.reads, seed)) if spec.reads else None
            if spec.reads and producer is None:
                raise ValueError(f"task {task} reads the checkpoint of {spec.reads} at seed {seed}: add {spec.reads}")
            # a consumer's number depends on the producer's run: its key names it
            key = record_key(
                weights_sha, preset, task, setup.config, hashed + ([producer.key] if producer else []), setup, seed
            )
            work_dir = out / "work" / key
            args = [str(setup.config)]
            if producer is not None:
                args += [str(producer.work_dir), "--select-checkpoint", spec.checkpoint]
            args += ["--backbone", str(backbone), "--work-dir", str(work_dir), *spec.tool_args]
            args += tool_data_args
            if spec.tool == "eval_features.py":
                args += ["--feature-cache", str(out / "features")]  # shared by every protocol and seed
            args += ["--amp", amp] if amp and spec.trains else []
            args += ["--cfg-options", *tool_options, f"randomness.seed={seed}"]
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
            if producer is not None:
                fields.update(input_record=producer.key, input_work_dir=str(producer.work_dir))
            job = Job(task, seed, key, setup, work_dir, tuple(args), fields)
            producers[task, seed] = job
            jobs.append(job)
    return jobs


def local_command(job: Job) -> list[str]:
    """The task's tool in one process; tools/dist_train.sh (torchrun) for training on several."""
    if job.processes > 1:
        config, *rest = job.tool_args
        return ["bash", str(REPO / "tools/dist_train.sh"), config, str(job.processes), *rest]
    return [sys.executable, str(REPO / "tools" / job.spec.tool), *job.tool_args]


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
        stale = job.work_dir / "result.json"
        if not job.spec.trains and stale.exists():
            # an evaluation starts over: a record left by an earlier attempt must not pass for this one
            stale.replace(stale.with_name("result.previous.json"))
        status = run_child(cmd, f)
    if status:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{job.task} failed (exit {status}); log: {log}\n{tail}")
    record = make_record(
        final_result(job.work_dir, job.spec.trains),
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


HEADLINES = {
    "finetune": lambda m: f"top-1 {m['top1']:.2f}",
    "linprobe": lambda m: f"top-1 {m['top1']:.2f}",
    "attentive": lambda m: f"top-1 {m['top1']:.2f}",
    "ade20k": lambda m: f"mIoU {m['mIoU']:.2f}",
    "ade20k-linear": lambda m: f"mIoU {m['mIoU']:.2f}",
    "ade20k-msflip": lambda m: f"mIoU (ms+flip) {m['mIoU']:.2f}",
    "coco": lambda m: f"box AP {100 * m['coco/bbox_mAP']:.1f}, mask AP {100 * m['coco/segm_mAP']:.1f}",
    "knn": lambda m: f"top-1 k=20 {m['top1_k20']:.2f}, k=200 {m['top1_k200']:.2f}",
    "lowshot": lambda m: f"top-1 1% {m['top1_1pct']:.2f}, 10% {m['top1_10pct']:.2f}",
    "robustness": lambda m: (
        f"IN-A {m['imagenet_a_top1']:.1f}, IN-R {m['imagenet_r_top1']:.1f}, Sketch {m['sketch_top1']:.1f}, "
        f"V2 {m['v2_top1']:.1f}, IN-C mCE {m['imagenet_c_mce']:.1f}"
    ),
}


def headline(task: str, metrics: dict) -> str:
    return HEADLINES[task](metrics)


def check_request(preset: str, tasks: tuple[str, ...], data: dict[str, Path]) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    unknown = set(tasks) - set(ALL_TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {', '.join(ALL_TASKS)}")
    without = [t for t in tasks if t not in PRESETS[preset]]
    if without:
        raise ValueError(
            f"the {preset} preset has no recipe for {without}; presets with one: "
            + "; ".join(f"{t}: {', '.join(p for p in PRESETS if t in PRESETS[p])}" for t in without)
        )
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
