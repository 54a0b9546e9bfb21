"""One JSON record per evaluated run: metrics with the provenance needed to
trust and re-run them."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from mmengine.dist import broadcast_object_list
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel
from mmengine.registry import HOOKS

from .hooks import unwrap_model

LIBRARIES = ("torch", "torchvision", "timm", "mmengine", "mmcv", "mmseg", "mmdet", "numpy")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout
    return out.stdout.strip() + ("-dirty" if dirty.strip() else "")


def hardware() -> dict:
    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count()}
    return {"device": platform.processor() or platform.machine(), "gpus": 0}


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically: a crash never leaves a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def final_record(work_dir: Path, max_iters: int) -> dict | None:
    """``work_dir/result.json`` if it is a validation of iteration ``max_iters``
    (the run's last), else None."""
    path = work_dir / "result.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("split") != "val" or record.get("iter") != max_iters:
        return None
    return record


def evaluation_record(
    task: str,
    metrics: dict,
    backbone: dict | None,
    config_file: str,
    config_text: str,
    start_time: float,
    **extra,
) -> dict:
    """The record of an evaluation that trains nothing through mmengine (k-NN,
    logistic regression on frozen features, robustness sets): the fields a
    validation record of :class:`ResultsRecordHook` has, with ``split="test"``
    (a complete evaluation; nothing is resumed). ``extra`` adds fields, e.g.
    the ``checkpoint`` evaluated or the files the protocol wrote."""
    return {
        "task": task,
        "split": "test",
        "metrics": {k: float(v) for k, v in metrics.items()},
        "backbone": backbone,
        "config_file": config_file,
        "config": config_text,
        "git_commit": git_commit(Path(__file__).resolve().parents[2]),
        "versions": library_versions(),
        "hardware": hardware(),
        "world_size": 1,
        "wall_time_s": round(time.time() - start_time, 1),
        "command": " ".join(sys.argv),
        **extra,
    }


@HOOKS.register_module()
class ResultsRecordHook(Hook):
    """After each validation / test, writes ``work_dir/result.json``: task,
    metrics, epoch, iteration and the run's last iteration (validation) or the
    checkpoint (test), backbone (file, weights sha256, source), the resolved
    config, git commit, library versions, hardware, wall time and the command
    line. The file always holds the run's latest evaluation.

    A record is final when its ``iter`` equals ``max_iters``. A run that starts
    from iteration 0 moves an older record aside (``result.previous.json``) so
    that it can never pass for this run's; a run that ends without a record of
    its last iteration (its final validation was interrupted and the rerun
    resumed at the end) validates before it returns.
    """

    priority = "LOW"

    def __init__(self, task: str, extra: dict | None = None) -> None:
        self.task = task
        self.extra = extra or {}  # further fields of every record, e.g. how a test was augmented
        self.start = time.time()

    def before_run(self, runner) -> None:
        self.start = time.time()

    def before_train(self, runner) -> None:
        path = Path(runner.work_dir) / "result.json"
        if runner.rank == 0 and runner.iter == 0 and path.exists():
            path.replace(path.with_name("result.previous.json"))
            runner.logger.info(f"{path} is from an earlier run; moved to result.previous.json")

    def after_train(self, runner) -> None:
        if runner.val_loop is None:
            return
        # Rank 0 decides: every rank must take part in the validation, or none.
        missing = [runner.rank == 0 and final_record(Path(runner.work_dir), runner.iter) is None]
        broadcast_object_list(missing, src=0)
        if not missing[0]:
            return
        runner.logger.info(f"no evaluation of iteration {runner.iter} recorded (interrupted?); validating now")
        runner.val_loop.run()

    def _write(self, runner, split: str, metrics: dict | None) -> None:
        if runner.rank != 0 or not metrics:
            return
        model = unwrap_model(runner.model)
        if isinstance(model, BaseTTAModel):  # tools/test.py --tta: the tested model is inside
            model = model.module
        record = {
            "task": self.task,
            "split": split,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "backbone": getattr(model, "backbone_meta", None)  # classifiers; segmentors hold it in .backbone
            or getattr(getattr(model, "backbone", None), "backbone_meta", None),
            "config_file": runner.cfg.filename,
            "config": runner.cfg.pretty_text,
            "git_commit": git_commit(Path(__file__).resolve().parents[2]),
            "versions": library_versions(),
            "hardware": hardware(),
            "world_size": runner.world_size,
            "wall_time_s": round(time.time() - self.start, 1),
            "command": " ".join(sys.argv),
            **self.extra,
        }
        if split == "val":  # during training
            record.update(epoch=runner.epoch, iter=runner.iter, max_iters=runner.max_iters)
        else:  # a test run evaluates a saved checkpoint; touching runner.epoch would build the train loop
            record["checkpoint"] = runner.cfg.get("load_from")
        write_json(Path(runner.work_dir) / "result.json", record)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._write(runner, "val", metrics)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._write(runner, "test", metrics)
