"""The suite on real clusters: configs that keep the published batch on 1, 8 or 16
GPUs, seeds and cfg-options, and SLURM submission and collection (fake sbatch and
sacct on PATH, written here)."""

import json
import os
import shlex
import stat
from pathlib import Path

import pytest

from pretrain.engine.runtime import effective_batch_size, prepare_config
from suite.recipes import PRESETS, BatchMismatchError, parse_cfg_options, resolve_setup
from suite.report import build_table, load_records, write_report
from suite.runner import plan_jobs, prepare_backbone
from suite.slurm import SlurmResources, collect, submit_suite

from conftest import REPO, run_tool

# The papers' total batches: MAE fine-tune 1024 and linear probe 16384, ADE20K 16, COCO 32;
# CAE's attentive probe 8192, DINOv2's ADE20K linear 16; the tests of a task's checkpoint
# (ade20k-msflip, robustness) resolve its producer's config.
PAPER_BATCH = {
    "finetune": 1024, "linprobe": 16384, "ade20k": 16, "coco": 32, "attentive": 8192, "ade20k-linear": 16,
    "ade20k-msflip": 16, "robustness": 1024,
}  # fmt: skip


def batch_of(config, world_size: int, options: dict | None = None) -> int:
    """The effective batch as tools/train.py computes it from the resolved config."""
    cfg, _ = prepare_config(str(config), amp="none", cfg_options=options)
    return effective_batch_size(cfg, world_size)


@pytest.mark.parametrize("world_size", [1, 8, 16])
def test_full_preset_keeps_the_published_batch(world_size):
    for task, recipe in PRESETS["full"].items():
        if task not in PAPER_BATCH:  # k-NN, low-shot: nothing trained (tests/test_suite_protocols.py)
            continue
        published = batch_of(REPO / recipe.config, recipe.gpus)
        assert published == PAPER_BATCH[task]
        setup = resolve_setup("full", task, world_size)
        assert batch_of(setup.config, world_size) == published, (task, setup.config.name)
        assert setup.effective_batch == published and setup.changes == ()
        # fewer GPUs than published: accumulation makes up the difference (the attentive probe's
        # configs for fewer GPUs grow the batch per GPU first: 8 x 1024, 16 x 512, 1 x 1024 x 8)
        if task != "attentive":
            assert setup.accumulation == max(1, recipe.gpus // world_size), (task, setup.config.name)


def test_a_batch_that_cannot_be_kept_is_refused_with_the_arithmetic():
    with pytest.raises(BatchMismatchError) as refused:
        resolve_setup("full", "finetune", 4)
    message = str(refused.value)
    assert "effective batch of 1024 = 8 GPUs x 128 per GPU x 1 accumulation" in message
    assert "vit-base-p16_finetune_8xb128-amp-100e_in1k.py: 4 x 128 x 1 = 512" in message
    assert "vit-base-p16_finetune_1xb128-accum8-amp-100e_in1k.py: 4 x 128 x 8 = 4096" in message
    assert "= 1024 / 4 = 256" in message and "--allow-batch-change" in message
    with pytest.raises(BatchMismatchError, match=r"16 / 3 = 5\.333 is not a whole number"):
        resolve_setup("full", "ade20k", 3)
    # a batch given in --cfg-options counts as well
    with pytest.raises(BatchMismatchError, match=r"8 x 64 x 1 = 512"):
        resolve_setup("full", "finetune", 8, {"train_dataloader.batch_size": 64})


def test_allow_batch_change_rescales_the_lr_and_records_it():
    ade = resolve_setup("full", "ade20k", 4, allow_batch_change=True)
    assert ade.arithmetic == "4 x 2 x 1 = 8" and ade.lr_options == ("optim_wrapper.optimizer.lr=5e-05",)
    assert ade.changes == (
        "effective batch 8 instead of the published 16; lr 0.0001 -> 5e-05 by the linear rule, x 8 / 16",
    )
    cfg, _ = prepare_config(str(ade.config), amp="none", cfg_options=parse_cfg_options(ade.lr_options))
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-4 * 8 / 16)
    # lr_scaling configs: tools/train.py rescales the lr itself
    finetune = resolve_setup("full", "finetune", 4, allow_batch_change=True)
    assert finetune.effective_batch == 512 and finetune.lr_options == ()
    assert finetune.changes == (
        "effective batch 512 instead of the published 1024; lr 0.001 = lr_scaling 0.0005 x 512 / 256",
    )


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return prepare_backbone("random:tiny", tmp_path_factory.mktemp("backbones"))


def test_keys_work_dirs_and_options_of_each_seed(backbone, tmp_path):
    data = {"imagenet": tmp_path / "imagenet"}
    options = ["optim_wrapper.optimizer.lr=3e-3", "train_dataloader.num_workers=10", "default_hooks.logger.interval=5"]

    def plan(gpus: int, seeds, cfg_options=options):
        return plan_jobs(
            backbone, tmp_path, "full", ("finetune",), data, gpus, "SdAE", "none", seeds=seeds, cfg_options=cfg_options
        )

    one, eight = plan(1, [0, 1]), plan(8, [0, 1])
    jobs = one + eight
    assert len({j.key for j in jobs}) == len({j.work_dir for j in jobs}) == 4
    assert "-1x8-b1024-seed0-" in one[0].key and "-8x1-b1024-seed1-" in eight[1].key
    assert one[1].tool_args[-4:] == (*options, "randomness.seed=1")  # passed through as given
    fields = one[0].record_fields
    assert (fields["world_size"], fields["batch_per_gpu"], fields["accumulation"], fields["effective_batch"]) == (
        1, 128, 8, 1024,
    )  # fmt: skip
    assert fields["seed"] == 0 and fields["cfg_options"] == options
    # the recipe's lr is 5e-4 x 1024 / 256; num_workers=10 is the recipe's own, so not a change
    assert fields["recipe_changes"] == [
        "optim_wrapper.optimizer.lr: 0.002 -> 0.003",
        "default_hooks.logger.interval: 50 -> 5",
        "precision: bf16 -> none (--amp)",
    ]
    # the config's own seed (0) is the same run as --seeds 0; other options are another run
    assert plan(8, None)[0].key == eight[0].key
    assert plan(8, [0], options[:1])[0].key != eight[0].key
    with pytest.raises(ValueError, match="--seeds"):
        plan(8, None, ["randomness.seed=3"])


def fake_record(task: str, seed: int, top1: float, **fields) -> dict:
    record = {
        "task": task, "stage": "imagenet", "metrics": {"top1": top1}, "label": "SdAE", "preset": "full",
        "record_key": f"{task}-{seed}-{top1}", "recorded_at": f"T{seed}", "data": "ImageNet-1k (/data)",
        "config": "cfg", "config_file": "x.py", "git_commit": "deadbeef", "versions": {"torch": "2"},
        "hardware": {"gpus": 8}, "wall_time_s": 1.0, "reproduce": "python tools/train.py x.py",
        "backbone": {"weights_sha256": "ab" * 32, "pretraining": {"method": "SdAE", "epochs": 300},
                     "arch": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "grid": [14, 14]}},
        "world_size": 8, "batch_per_gpu": 128 if task == "finetune" else 2048, "accumulation": 1,
        "effective_batch": 1024 if task == "finetune" else 16384, "seed": seed, "cfg_options": [],
        "recipe_changes": [], "amp": None,
    }  # fmt: skip
    record.update(fields)
    return record


def test_report_shows_mean_std_and_n_over_seeds_and_the_changes(tmp_path):
    lr = {
        "cfg_options": ["optim_wrapper.optimizer.lr=2e-3"],
        "recipe_changes": ["optim_wrapper.optimizer.lr: 0.001 -> 0.002"],
    }
    records = [
        fake_record("finetune", 0, 10.0),  # replaced by the later record of seed 0
        fake_record("finetune", 0, 40.0, recorded_at="T9"),
        fake_record("finetune", 1, 42.0),
        fake_record("finetune", 2, 44.0),
        fake_record("linprobe", 0, 20.0),
        fake_record("linprobe", 1, 21.0),
        fake_record("finetune", 0, 45.0, **lr),
    ]
    for i, record in enumerate(records):
        (tmp_path / f"{i}.json").write_text(json.dumps(record))
    rows = build_table("imagenet", load_records(tmp_path), {"imagenet": {"rows": []}})
    assert rows[0][-3:] == ["Batch (GPUs x per GPU x accum.)", "Changes from the recipe", "Source"]
    assert rows[1][:-1] == [
        "SdAE", "300", "42.0 \u00b1 2.0 (n=3)", "20.5 \u00b1 0.7 (n=2)",
        "finetune 8x128x1 = 1024; linprobe 8x2048x1 = 16384", "none",
    ]  # fmt: skip
    assert rows[2][:-1] == [
        "SdAE", "300", "45.0 (n=1)", "\u2013", "finetune 8x128x1 = 1024", "optim_wrapper.optimizer.lr: 0.001 -> 0.002",
    ]  # fmt: skip


@pytest.mark.slow
def test_seeds_and_options_on_the_mini_preset(tmp_path):
    """Two seeds of the mini linear probe (64 generated images, one step per epoch)."""
    from pretrain.data.synthetic import write_imagenet_like

    data = tmp_path / "imagenet"
    write_imagenet_like(data, num_classes=4, train_per_class=16, val_per_class=4, image_size=96, seed=0)
    options = ["train_dataloader.num_workers=0", "val_dataloader.num_workers=0"]
    result = run_tool(
        str(REPO / "tools/run_suite.py"), "--checkpoint", "random:tiny", "--tasks", "linprobe",
        "--data", f"imagenet={data}", "--out", str(tmp_path / "suite"), "--label", "control",
        "--seeds", "0,1", "--cfg-options", *options,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "control: linprobe seed 1 done in" in result.stdout
    records = sorted(load_records(tmp_path / "suite/results"), key=lambda r: r["seed"])
    assert [r["seed"] for r in records] == [0, 1] and records[0]["work_dir"] != records[1]["work_dir"]
    for record in records:
        assert record["cfg_options"] == options and record["effective_batch"] == 64
        assert record["recipe_changes"] == [
            "train_dataloader.num_workers: 2 -> 0",
            "val_dataloader.num_workers: 2 -> 0",
        ]
        assert f"seed={record['seed']}" in record["config"]  # the resolved config the run trained with
    report = write_report(tmp_path / "suite/results", tmp_path / "report").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| control |"))
    assert "(n=2)" in row and "1x64x1 = 64" in row and "train_dataloader.num_workers: 2 -> 0" in row


FAKE_SBATCH = """#!/usr/bin/env bash
# fake sbatch: logs its arguments, prints the next job id as sbatch --parsable does
dir="$(dirname "$0")"
id=$(( $(cat "$dir/last_id" 2>/dev/null || echo 1000) + 1 ))
echo "$id" > "$dir/last_id"
printf '%q ' "$@" >> "$dir/sbatch.log"; echo >> "$dir/sbatch.log"
echo "$id;cluster"
"""
FAKE_SACCT = """#!/usr/bin/env bash
# fake sacct: logs its arguments, prints the states the test wrote (JobID|State|ExitCode)
dir="$(dirname "$0")"
printf '%q ' "$@" >> "$dir/sacct.log"; echo >> "$dir/sacct.log"
cat "$dir/states" 2>/dev/null || true
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A folder with fake sbatch and sacct, first on PATH (for this process and its children)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def sbatch_calls(bin_dir) -> list[list[str]]:
    path = bin_dir / "sbatch.log"
    return [shlex.split(line) for line in path.read_text().splitlines()] if path.exists() else []


def set_states(bin_dir, states: dict[str, str]) -> None:
    (bin_dir / "states").write_text(
        "".join(f"{job}|{state}|{'0:0' if state == 'COMPLETED' else '1:0'}\n" for job, state in states.items())
    )


def write_result(work_dir, iteration: int, max_iters: int = 10) -> None:
    """A stage's result.json: final when it evaluates the last iteration."""
    result = fake_record("imagenet", 0, 50.0) | {"split": "val", "iter": iteration, "max_iters": max_iters}
    for field in ("label", "preset", "record_key", "recorded_at", "data", "reproduce", "seed", "cfg_options"):
        del result[field]
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "result.json").write_text(json.dumps(result))


def test_slurm_submission_one_job_per_task_and_seed(fake_slurm, tmp_path):
    out = tmp_path / "suite"
    result = run_tool(
        str(REPO / "tools/run_suite.py"), "--checkpoint", "random:tiny", "--preset", "full",
        "--tasks", "finetune,coco", "--data", f"imagenet={tmp_path}/in1k", f"coco={tmp_path}/coco",
        "--gpus", "8", "--nodes", "2", "--seeds", "0,1", "--cfg-options", "default_hooks.logger.interval=10",
        "--launcher", "slurm", "--partition", "gpu", "--sbatch-args=--time=2-00:00:00 --account=lab", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    calls = sbatch_calls(fake_slurm)
    assert len(calls) == 4 and all(c[:3] == ["--parsable", "--time=2-00:00:00", "--account=lab"] for c in calls)
    (record_file,) = (out / "slurm").glob("submitted-*.json")
    jobs = json.loads(record_file.read_text())["jobs"]
    assert [(j["task"], j["seed"], j["job_id"]) for j in jobs] == [
        ("finetune", 0, "1001"), ("finetune", 1, "1002"), ("coco", 0, "1003"), ("coco", 1, "1004"),
    ]  # fmt: skip
    assert all(not j["depends_on"] for j in jobs)  # no task reads another's output today
    for job, call in zip(jobs, calls, strict=True):
        assert call[-1] == job["script"] and job["work_dir"].endswith(job["key"])
        assert f"-16x1-b{PAPER_BATCH[job['task']]}-seed{job['seed']}-" in job["key"]
        script = Path(job["script"]).read_text().splitlines()
        for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
                     "#SBATCH --gres=gpu:8", f"#SBATCH --output={job['work_dir']}/slurm-%j.out"):  # fmt: skip
            assert line in script
        srun = shlex.split(script[-1])
        assert srun[:2] == ["srun", "--kill-on-bad-exit=1"] and srun[4] == str(REPO / "tools/train.py")
        config = {"finetune": "vit-base-p16_finetune_16xb64-amp-100e_in1k.py",
                  "coco": "mask-rcnn_vit-b16_fpn_16xb2-amp-1x_coco.py"}[job["task"]]  # fmt: skip
        assert srun[5].endswith(config) and srun[6:8] == ["--launcher", "slurm"]
        assert srun[-2:] == ["default_hooks.logger.interval=10", f"randomness.seed={job['seed']}"]
        assert srun[srun.index("--work-dir") + 1] == job["work_dir"]
    # nothing finished yet: --collect records nothing, names what is pending and what failed
    set_states(fake_slurm, {"1001": "RUNNING", "1002": "PENDING", "1003": "FAILED", "1004": "CANCELLED by 42"})
    collected = run_tool(str(REPO / "tools/run_suite.py"), "--collect", "--out", str(out))
    assert collected.returncode == 1, collected.stderr
    assert "[collect] running: finetune seed 0 (job 1001)" in collected.stdout
    assert "NOT recorded: coco seed 0 (job 1003): FAILED (exit code 1:0)" in collected.stdout
    assert "NOT recorded: coco seed 1 (job 1004): CANCELLED" in collected.stdout
    assert not (out / "results").exists()


def test_slurm_dependencies_resubmission_and_collection(fake_slurm, tmp_path, capsys):
    out, data = tmp_path / "suite", {"imagenet": tmp_path / "imagenet"}
    resources = SlurmResources("gpu", nodes=1, gpus_per_node=1)
    # declared for this test: the linear probe reads the fine-tune's output
    inputs = {"linprobe": ("finetune",)}

    def submit():
        return submit_suite(
            "random:tiny", out, "mini", ("linprobe", "finetune"), data, resources, seeds=[0, 1], amp="none",
            inputs=inputs,
        )  # fmt: skip

    submit()
    calls = sbatch_calls(fake_slurm)
    assert [c[1] if len(c) == 3 else None for c in calls] == [
        None, None, "--dependency=afterok:1001", "--dependency=afterok:1002",
    ]  # fmt: skip
    jobs = {(j["task"], j["seed"]): j for j in json.loads(next((out / "slurm").glob("*.json")).read_text())["jobs"]}
    assert {k: j["job_id"] for k, j in jobs.items()} == {
        ("finetune", 0): "1001", ("finetune", 1): "1002", ("linprobe", 0): "1003", ("linprobe", 1): "1004",
    }  # fmt: skip
    work = {k: out / "work" / j["key"] for k, j in jobs.items()}

    # 1001 finished; 1002 failed; 1003 was interrupted after an intermediate evaluation; 1004 waits
    write_result(work["finetune", 0], 10)
    write_result(work["linprobe", 0], 5)
    set_states(fake_slurm, {"1001": "COMPLETED", "1002": "FAILED", "1003": "TIMEOUT", "1004": "PENDING"})
    found = collect(out)
    assert [(r["task"], r["seed"], r["slurm_job_id"]) for r in found.recorded] == [("finetune", 0, "1001")]
    assert sorted((e["job_id"], why.split()[0]) for e, why in found.failed) == [("1002", "FAILED"), ("1003", "TIMEOUT")]
    assert [(e["job_id"], state) for e, state in found.pending] == [("1004", "PENDING")]
    assert [p.stem for p in (out / "results").glob("*.json")] == [jobs["finetune", 0]["key"]]
    (record,) = load_records(out / "results")  # a full-provenance record
    assert record["launcher"] == "slurm" and record["world_size"] == 1 and record["seed"] == 0

    # Submitting again: the failed and the interrupted jobs go again (the interrupted one resumes in
    # its work dir), the recorded one does not; 1004 waits for the failed 1002, so it can never start
    # and goes again after the new fine-tune job.
    capsys.readouterr()
    submit()
    assert "scancel 1004" in capsys.readouterr().out
    new_calls = sbatch_calls(fake_slurm)[4:]
    assert [(c[-1], c[1] if len(c) == 3 else None) for c in new_calls] == [
        (jobs["finetune", 1]["script"], None),  # 1005
        (jobs["linprobe", 0]["script"], None),  # 1006: its fine-tune is recorded
        (jobs["linprobe", 1]["script"], "--dependency=afterok:1005"),  # 1007
    ]

    # 1005 finished; 1006 exited 0 without evaluating its last iteration; 1007 runs; 1004 was cancelled
    write_result(work["finetune", 1], 10)
    set_states(fake_slurm, {"1004": "CANCELLED", "1005": "COMPLETED", "1006": "COMPLETED", "1007": "RUNNING"})
    found = collect(out)
    assert [(r["task"], r["seed"]) for r in found.recorded] == [("finetune", 1)]
    ((entry, why),) = found.failed
    assert entry["job_id"] == "1006" and "evaluates iteration 5 of 10" in why
    assert [(e["job_id"], state) for e, state in found.pending] == [("1007", "RUNNING")]
    assert found.already_recorded == 1 and len(list((out / "results").glob("*.json"))) == 2
