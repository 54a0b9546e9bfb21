"""Cost of SdAE's teacher feedings against MAE (paper Table 1), measured in one run.

For each variant, one training step (forward, backward, AdamW step; the
per-epoch EMA update is negligible and left out) is timed, its peak memory and
its FLOPs (torch's FlopCounterMode: forward + backward, all ops) are measured,
and all three are printed as ratios to MAE beside the paper's ratios.

    python tools/benchmark_pretrain.py --arch base --batch-size 8            # CPU here
    python tools/benchmark_pretrain.py --arch base --batch-size 96 --device cuda   # bf16 on a GPU
    python tools/benchmark_pretrain.py --arch tiny --img-size 224 --json

Variants: mae, full_image, masked, crop:K (K masked patches; default a third of
them), fold:T (multi-fold with T folds over all masked patches). Every variant
runs in its own subprocess, so peak memory (CUDA: max allocated; CPU: peak
resident memory above the post-import baseline) is not polluted by the others.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pretrain.models import SdAE

# Paper Table 1 (ViT-B/16, V100, per epoch; max memory per GPU).
PAPER = {
    "mae": dict(time_s=551, mem_gb=14.93),
    "full_image": dict(time_s=826, mem_gb=16.24),
    "masked": dict(time_s=761, mem_gb=16.01),
    "crop": dict(time_s=616, mem_gb=15.54),
    "fold:3": dict(time_s=706, mem_gb=16.02),
}
DEFAULT_VARIANTS = ["mae", "full_image", "masked", "crop", "fold:2", "fold:3", "fold:4"]


def model_kwargs(variant: str, num_masked: int) -> dict:
    if variant == "mae":
        return dict(target="pixels")
    if variant in ("full_image", "masked"):
        return dict(teacher_input=dict(kind=variant))
    kind, _, value = variant.partition(":")
    if kind == "crop":
        return dict(teacher_input=dict(kind="crop", num_tokens=int(value) if value else num_masked // 3))
    if kind == "fold" and value:
        return dict(teacher_input=dict(kind="multi_fold", num_folds=int(value)))
    raise ValueError(f"unknown variant {variant!r}; use mae, full_image, masked, crop[:K] or fold:T")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(variant: str, args: argparse.Namespace) -> dict:
    """One variant, in this process."""
    device = torch.device(args.device)
    cpu_baseline = rss_kib("VmRSS") if device.type == "cpu" else 0
    torch.manual_seed(0)
    num_patches = (args.img_size // (14 if args.arch == "huge" else 16)) ** 2
    num_masked = num_patches - int(num_patches * 0.25)
    model = SdAE(arch=args.arch, img_size=args.img_size, **model_kwargs(variant, num_masked)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.04)
    imgs = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> None:
        with autocast:
            loss = model(imgs)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (rss_kib("VmHWM") - cpu_baseline) / 1024
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return dict(
        variant=variant,
        step_s=statistics.median(times),
        peak_mib=peak_mib,
        gflops_per_image=counter.get_total_flops() / args.batch_size / 1e9,
    )


def run_all(args: argparse.Namespace) -> list[dict]:
    rows = []
    for i, variant in enumerate(args.variants, 1):
        print(f"[{i}/{len(args.variants)}] {variant} ...", file=sys.stderr, flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--single",
            variant,
            "--arch",
            args.arch,
            "--img-size",
            str(args.img_size),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
            "--precision",
            args.precision,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            raise SystemExit(f"variant {variant} failed:\n{out.stderr[-4000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    mae = next((r for r in rows if r["variant"] == "mae"), None)
    if mae is None:
        raise SystemExit("include the 'mae' variant: ratios are relative to it")
    for row in rows:
        row["time_vs_mae"] = row["step_s"] / mae["step_s"]
        row["mem_vs_mae"] = row["peak_mib"] / mae["peak_mib"]
        row["flops_vs_mae"] = row["gflops_per_image"] / mae["gflops_per_image"]
        paper = PAPER.get(row["variant"].split(":")[0] if row["variant"].startswith("crop") else row["variant"])
        row["paper_time_vs_mae"] = paper["time_s"] / PAPER["mae"]["time_s"] if paper else None
        row["paper_mem_vs_mae"] = paper["mem_gb"] / PAPER["mae"]["mem_gb"] if paper else None
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    def ratio(x):
        return "-" if x is None else f"x{x:.2f}"

    lines = [
        f"ViT-{args.arch} {args.img_size}px, batch {args.batch_size}, {args.device} {args.precision}, "
        f"median of {args.steps} steps after {args.warmup} warm-up",
        "| variant | step (s) | time vs MAE | paper | peak mem (MiB) | mem vs MAE | paper "
        "| GFLOPs/img | FLOPs vs MAE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['step_s']:.3f} | {ratio(r['time_vs_mae'])} | {ratio(r['paper_time_vs_mae'])} "
            f"| {r['peak_mib']:.0f} | {ratio(r['mem_vs_mae'])} | {ratio(r['paper_mem_vs_mae'])} "
            f"| {r['gflops_per_image']:.1f} | {ratio(r['flops_vs_mae'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="base", choices=["tiny", "small", "base", "large", "huge"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of a table")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: measure one variant
    args = parser.parse_args()
    if args.precision == "auto":
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch sees no GPU")

    if args.single:
        print(json.dumps(measure(args.single, args)))
        return
    for variant in args.variants:  # fail on a typo before spending minutes
        model_kwargs(variant, 147)
    rows = with_ratios(run_all(args))
    meta = dict(
        arch=args.arch,
        img_size=args.img_size,
        batch_size=args.batch_size,
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        precision=args.precision,
        steps=args.steps,
        torch=torch.__version__,
    )
    if args.json:
        print(json.dumps(dict(meta=meta, results=rows), indent=2))
    else:
        print(table(rows, args))


if __name__ == "__main__":
    main()
