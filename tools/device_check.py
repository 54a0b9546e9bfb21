"""The suite's prepared check on a CUDA GPU, one command (run it through
``tools/device_check.sh``, which first installs the carried wheels).

Parts, in this order, each in its own process with a time limit taken from
one overall budget (default 450 s), results written to ``OUT/device_check.json``
after every part:

1. ``gpu-tests``: ``pytest -m gpu tests/test_gpu.py`` (bf16 step, no host
   synchronisation in the training step, SDPA kernels, compiled blocks, the
   biased dense attention, JPEG decoding on the GPU vs the CPU);
2. ``benchmark``: ``tools/benchmark_pretrain.py`` for MAE and every teacher
   feeding (ViT-B/16, 224 px, batch 96, bf16): step time, img/s, peak memory,
   TFLOP/s and MFU against the matrix-product peak measured in the same run,
   checked against the targets;
3. ``train-resume``: a ViT-B SdAE bf16 run of 200 iterations through the
   mmengine Runner (JPEGs decoded on the GPU) with a checkpoint at iteration
   100, and a second run resumed from it; the losses after the resume are
   compared with the uninterrupted run's;
4. ``data``: images per second of the data path, JPEG decoding on the CPU
   (every core) vs on the GPU, at ViT-B's batch;
5. ``compiled-benchmark``: the benchmark of MAE and SdAE (3 folds) with
   ``torch.compile``d blocks.

``--quick`` shrinks every part to ViT-micro at 32 px and a few steps (minutes
on 2 CPU cores) so the check itself is tested without a GPU; with
``--device cpu`` the GPU tests report themselves skipped, and the compiled
benchmark uses the ``aot_eager`` backend.

    bash tools/device_check.sh --out "$OUT"                 # on the GPU machine
    python tools/device_check.py --device cpu --quick --out runs/device_check   # here
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("gpu-tests", "benchmark", "train-resume", "data", "compiled-benchmark")
# Longest each part may run (the overall budget can cut it shorter).
PART_LIMIT_S = {"gpu-tests": 180, "benchmark": 200, "train-resume": 180, "data": 90, "compiled-benchmark": 240}
CONFIG = REPO / "pretrain/configs/sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def environment(device: str) -> dict:
    import timm

    env = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        cpu_count=os.cpu_count(),
        device=device,
        device_name=torch.cuda.get_device_name() if device == "cuda" else "cpu",
    )
    for name in ("torchvision", "mmengine"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def part_command(part: str, args: argparse.Namespace, out: Path) -> list[str]:
    py = sys.executable
    quick = args.quick
    if part == "gpu-tests":
        return [py, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider",
                "--junitxml", str(out / "gpu_tests.xml")]  # fmt: skip
    if part in ("benchmark", "compiled-benchmark"):
        size = ["--arch", "micro", "--img-size", "32", "--batch-size", "8", "--steps", "2", "--warmup", "1"]
        cmd = [py, "tools/benchmark_pretrain.py", "--device", args.device, "--json"]
        cmd += size if quick else ["--arch", "base", "--batch-size", "96", "--steps", "20", "--warmup", "5"]
        if part == "compiled-benchmark":
            backend = "aot_eager" if args.device == "cpu" else "inductor"
            cmd += ["--compile", "--compile-backend", backend, "--variants", "mae", "fold:3"]
        elif quick:
            cmd += ["--variants", "mae", "fold:3"]
        return cmd
    if part == "data":
        cmd = [py, "tools/benchmark_data.py", "--device", args.device, "--json"]
        if quick:
            return [*cmd, "--generate", "32", "--batch-size", "8", "--workers", "1", "--warmup", "1", "--batches", "2"]
        return [*cmd, "--generate", "3072", "--batch-size", "96", "--workers", str(os.cpu_count()), "--batches", "28"]
    if part == "train-resume":
        return [py, __file__, "--run-train-resume", "--device", args.device, *(["--quick"] if quick else [])]
    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")


def junit_summary(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return dict(counts, failed=failed)


def run_part(part: str, args: argparse.Namespace, out: Path, limit_s: float, log: TextIO) -> dict:
    """One part in a subprocess; its last stdout line (or all of it) is its JSON."""
    cmd = part_command(part, args, out)  # on a CPU the GPU tests still run: they must import and skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env["PYTHONUNBUFFERED"] = "1"
    start = time.perf_counter()
    # its own process group: a part that runs out of time is stopped with every process it
    # started (the benchmark's per-variant processes), so none keeps the GPU busy afterwards
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        log.write(f"\n===== {part} (timed out after {limit_s:.0f} s)\n{stdout[-4000:]}\n{stderr[-6000:]}\n")
        return dict(status="timed out", limit_s=limit_s, wall_s=time.perf_counter() - start, command=cmd)
    proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    wall_s = time.perf_counter() - start
    log.write(f"\n===== {part} (exit {proc.returncode}, {wall_s:.0f} s)\n")
    log.write(f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n")
    result = dict(wall_s=wall_s, command=cmd, returncode=proc.returncode)
    if part == "gpu-tests":
        xml = out / "gpu_tests.xml"
        if not xml.is_file():
            return dict(result, status="failed", error=proc.stderr[-2000:] or proc.stdout[-2000:])
        tests = junit_summary(xml)
        ok = proc.returncode in (0, 5) and not tests["failed"]
        if ok and tests["skipped"] == tests["tests"]:
            status = "skipped: every test needs a CUDA GPU" if args.device != "cuda" else "failed: all skipped"
        else:
            status = "passed" if ok else "failed"
        return dict(result, status=status, results=tests)
    if proc.returncode != 0:
        return dict(result, status="failed", error=proc.stderr[-3000:])
    start_of_json = 0 if proc.stdout.startswith("{") else proc.stdout.rfind("\n{") + 1  # after any log lines
    results = json.loads(proc.stdout[start_of_json:])
    if part == "train-resume" and not results["first_loss_equal"]:
        return dict(result, status="failed: the first loss after the resume differs", results=results)
    return dict(result, status="passed", results=results)


def summary_line(part: str, record: dict) -> str:
    line = f"{part:18s} {record['status']:10s} {record.get('wall_s', 0):6.0f} s"
    results = record.get("results") or {}
    if part == "gpu-tests" and results:
        line += f"  {results['tests']} tests, {len(results['failed'])} failed, {results['skipped']} skipped"
    elif part in ("benchmark", "compiled-benchmark") and results:
        rows = {r["variant"]: r for r in results["results"]}
        line += "  " + ", ".join(f"{v} {r['img_s']:.0f} img/s ({r['mfu'] * 100:.0f} % MFU)" for v, r in rows.items())
        targets = results["meta"].get("targets")
        if targets:
            line += f"; targets {'met' if targets['img_s_met'] and targets['time_vs_mae_met'] else 'NOT met'}"
    elif part == "data" and results:
        line += "  " + ", ".join(f"decode on {r['decode']} {r['img_s']:.0f} img/s" for r in results["results"])
    elif part == "train-resume" and results:
        line += (
            f"  resumed at iteration {results['resume_iteration']}: first loss "
            f"{'equal' if results['first_loss_equal'] else 'DIFFERENT'}, max relative deviation "
            f"{results['max_relative_deviation']:.2e}; {results['train_img_s']:.0f} img/s in the Runner"
        )
    return line


def train_resume(device: str, quick: bool) -> dict:
    """An uninterrupted run and a run resumed from its middle checkpoint, through
    the mmengine Runner exactly as tools/train.py builds it."""
    from mmengine.runner import Runner

    from pretrain.data.real import write_photo_jpegs
    from pretrain.engine.runtime import prepare_config

    if quick:
        arch, img_size, batch, per_epoch, epochs, workers = "micro", 32, 8, 2, 4, 0
        model = {"model.decoder": dict(embed_dim=64, depth=2, num_heads=4), "model.teacher_input.num_tokens": None}
    else:
        arch, img_size, batch, per_epoch, epochs, workers = "base", 224, 96, 20, 10, min(os.cpu_count() or 1, 12)
        model = {}
    half = epochs // 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_photo_jpegs(tmp / "data", batch * per_epoch, workers=max(workers, 1))
        options = {
            "train_dataloader.dataset.data_root": str(tmp / "data"),
            "train_dataloader.dataset.subdir": "",
            "train_dataloader.dataset.img_size": img_size,
            "train_dataloader.dataset.decode": "device",
            "train_dataloader.batch_size": batch,
            "train_dataloader.num_workers": workers,
            "train_dataloader.persistent_workers": workers > 0,  # as the recipe; torch refuses it without workers
            "train_dataloader.pin_memory": device == "cuda",
            "model.arch": arch,
            "model.img_size": img_size,
            **model,
            "train_cfg.max_epochs": epochs,
            "default_hooks.checkpoint.interval": half,
            "default_hooks.logger.interval": 50,
            "visualizer.vis_backends": [dict(type="LocalVisBackend")],
        }
        amp = None if device == "cuda" else "none"
        runs = {}
        for name, resume in (("uninterrupted", False), ("resumed", str(tmp / "uninterrupted" / f"epoch_{half}.pth"))):
            cfg, _ = prepare_config(str(CONFIG), str(tmp / name), resume, amp, dict(options))
            runner = Runner.from_cfg(cfg)
            runner.train()
            hub = runner.message_hub
            runs[name] = dict(
                loss=hub.get_scalar("train/loss").data[0].tolist(),
                time=hub.get_scalar("train/time").data[0].tolist(),
                data_time=hub.get_scalar("train/data_time").data[0].tolist(),
            )
    total, resumed_from = epochs * per_epoch, half * per_epoch
    after = total - resumed_from
    straight, resumed = runs["uninterrupted"]["loss"][-after:], runs["resumed"]["loss"][-after:]
    deviation = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(straight, resumed, strict=True))
    times = runs["uninterrupted"]["time"][per_epoch:]  # after the first epoch (start-up, warm-up)
    data_wait = runs["uninterrupted"]["data_time"][per_epoch:]
    return dict(
        arch=arch,
        img_size=img_size,
        batch_size=batch,
        iterations=total,
        resume_iteration=resumed_from,
        first_loss_equal=straight[0] == resumed[0],
        all_losses_equal=straight == resumed,
        max_relative_deviation=deviation,
        losses_uninterrupted=straight,
        losses_resumed=resumed,
        train_img_s=batch * len(times) / sum(times),
        data_wait_fraction=sum(data_wait) / sum(times),
        note=(
            "img/s through the Runner with JPEGs decoded on the device, including "
            f"each of the {epochs - 1} epoch boundaries (persistent workers, as in the recipe) "
            "and a host synchronisation per epoch"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/device_check")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="ViT-micro, a few steps: test the check on a CPU")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--budget-s", type=float, default=450.0, help="all parts together")
    parser.add_argument("--run-train-resume", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU (use --device cpu --quick to test the check here)")
    if args.run_train_resume:
        print(json.dumps(train_resume(args.device, args.quick)))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(environment=environment(args.device), quick=args.quick, budget_s=args.budget_s, parts={})
    if args.device != "cuda":
        report["note"] = "no CUDA device: GPU-only tests skip themselves; timings are CPU timings"
    path = out / "device_check.json"
    start = time.perf_counter()
    with open(out / "device_check.log", "w") as log:
        for part in args.parts:
            left = args.budget_s - (time.perf_counter() - start)
            if left < 10:
                report["parts"][part] = dict(status="not run: budget spent")
            else:
                report["parts"][part] = run_part(part, args, out, min(PART_LIMIT_S[part], left), log)
                log.flush()
            print(summary_line(part, report["parts"][part]), flush=True)
            report["wall_s"] = time.perf_counter() - start
            write_json(path, report)
    print(f"results: {path}")
    failed = [p for p, r in report["parts"].items() if r["status"] not in ("passed",) and "skipped" not in r["status"]]
    if failed:
        raise SystemExit(f"not passed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
