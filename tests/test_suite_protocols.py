"""The broader protocols in the suite runner (issue #14): tasks that evaluate
frozen features or another task's checkpoint, their order, keys and commands,
the checkpoint they take, and their tables in the report."""

import json
import shlex
from pathlib import Path

import pytest
import torch

from pretrain.engine.weights import trained_checkpoint
from suite.recipes import PRESETS, resolve_setup
from suite.report import TABLES, build_table, write_report
from suite.runner import (
    ALL_TASKS,
    TASK_SPECS,
    check_request,
    final_result,
    plan_jobs,
    prepare_backbone,
    resolve_tasks,
)
from suite.slurm import SlurmResources, job_script

from conftest import REPO, run_tool


def _save(path: Path, value: int) -> Path:
    torch.save({"state_dict": {"w": torch.tensor([value])}}, path)
    return path


def test_trained_checkpoint_picks_best_or_last_and_names_what_is_wrong(tmp_path):
    last = _save(tmp_path / "epoch_3.pth", 3)
    _save(tmp_path / "epoch_2.pth", 2)
    (tmp_path / "last_checkpoint").write_text(str(last))
    with pytest.raises(FileNotFoundError, match=r"exactly one best_\*\.pth .* found none"):
        trained_checkpoint(tmp_path, "best")
    best = _save(tmp_path / "best_top1_epoch_2.pth", 2)
    assert trained_checkpoint(tmp_path, "best") == best
    assert trained_checkpoint(tmp_path, "last") == last
    assert trained_checkpoint(last) == last  # a file is taken as given
    with pytest.raises(ValueError, match="--select-checkpoint best\\|last"):
        trained_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="picks a checkpoint in a work dir"):
        trained_checkpoint(last, "best")
    _save(tmp_path / "best_top1_epoch_3.pth", 3)
    with pytest.raises(FileNotFoundError, match=r"best_top1_epoch_2\.pth, best_top1_epoch_3\.pth"):
        trained_checkpoint(tmp_path, "best")
    last.write_bytes(last.read_bytes()[:-40])  # truncated by a crash
    with pytest.raises(ValueError, match=r"epoch_3\.pth cannot be evaluated: it is not a complete zip archive"):
        trained_checkpoint(tmp_path, "last")
    with pytest.raises(FileNotFoundError, match="no usable last_checkpoint"):
        trained_checkpoint(_empty_dir(tmp_path), "last")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        trained_checkpoint(tmp_path / "nowhere", "last")


def _empty_dir(root: Path) -> Path:
    folder = root / "empty"
    folder.mkdir()
    return folder


def test_an_evaluation_is_final_only_when_complete(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"split": "val", "iter": 4, "max_iters": 4, "metrics": {}}))
    assert final_result(tmp_path)["iter"] == 4
    with pytest.raises(RuntimeError, match="not the record of a complete evaluation"):
        final_result(tmp_path, trains=False)
    (tmp_path / "result.json").write_text(json.dumps({"split": "test", "metrics": {"top1_k20": 50.0}}))
    assert final_result(tmp_path, trains=False)["metrics"] == {"top1_k20": 50.0}
    with pytest.raises(RuntimeError, match="evaluates iteration None"):
        final_result(tmp_path)


def test_every_preset_has_every_task_and_consumers_use_their_producers_config():
    for preset, recipes in PRESETS.items():
        assert set(recipes) == set(ALL_TASKS), preset
        for task, spec in TASK_SPECS.items():
            if spec.reads:
                assert recipes[task].config == recipes[spec.reads].config, (preset, task)


def test_unknown_task_and_missing_data_are_refused():
    with pytest.raises(ValueError, match=r"unknown tasks \['knnn'\]; choose from finetune, .*robustness"):
        check_request("real", ("knnn",), {})
    with pytest.raises(ValueError, match="no data root given for \\['robustness'\\]"):
        check_request("real", ("finetune", "robustness"), {"imagenet": Path("x")})


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return prepare_backbone("random:micro-p8", tmp_path_factory.mktemp("backbone"))


DATA = {"imagenet": Path("/data/in1k"), "ade20k": Path("/data/ade"), "coco": Path("/data/coco"),
        "robustness": Path("/data/robust")}  # fmt: skip


def test_consumers_run_after_their_producer_on_its_checkpoint(tmp_path, backbone):
    with pytest.raises(ValueError, match="robustness reads the output of finetune: add finetune to --tasks"):
        resolve_tasks("real", ("robustness",), 1)
    jobs = plan_jobs(
        backbone, tmp_path, "real", ("robustness", "ade20k-msflip", "knn", "ade20k", "finetune"), DATA, 1, "x",
        seeds=[0, 1],
    )  # fmt: skip
    order = [(j.task, j.seed) for j in jobs]
    assert order.index(("finetune", 1)) < order.index(("robustness", 1))
    assert order.index(("ade20k", 0)) < order.index(("ade20k-msflip", 0))
    by = {(j.task, j.seed): j for j in jobs}
    robust = by["robustness", 1]
    finetune = by["finetune", 1]
    assert robust.tool_args[:4] == (finetune.tool_args[0], str(finetune.work_dir), "--select-checkpoint", "best")
    assert robust.record_fields["input_record"] == finetune.key
    assert robust.tool_args[robust.tool_args.index("--data-root") + 1] == "/data/robust"
    msflip = by["ade20k-msflip", 0]
    assert msflip.tool_args[1:4] == (str(by["ade20k", 0].work_dir), "--select-checkpoint", "last")
    assert "--tta" in msflip.tool_args
    assert msflip.processes == 1 and robust.processes == 1
    # the row of the ms+flip number is the ade20k row: same processes, options and precision
    assert msflip.record_fields["world_size"] == by["ade20k", 0].record_fields["world_size"]
    knn = by["knn", 0]
    assert knn.tool_args[knn.tool_args.index("--feature-cache") + 1] == str(tmp_path / "features")
    # another producer run (another seed, other options) is another consumer record
    again = plan_jobs(
        backbone, tmp_path, "real", ("finetune", "robustness"), DATA, 1, "x", seeds=[1],
        cfg_options=["train_dataloader.num_workers=0"],
    )  # fmt: skip
    assert again[1].key != robust.key and again[1].record_fields["input_record"] == again[0].key


def test_evaluations_run_in_one_process_on_any_number_of_gpus(tmp_path, backbone):
    setup = resolve_setup("full", "knn", 8)
    assert setup.world_size == 1 and setup.accumulation == 1
    (ft, knn, robust) = plan_jobs(backbone, tmp_path, "full", ("finetune", "knn", "robustness"), DATA, 8, "x")
    assert ft.processes == 8 and knn.processes == 1 and robust.processes == 1
    script = job_script(robust, SlurmResources("gpu", nodes=2, gpus_per_node=8))
    assert "#SBATCH --nodes=1" in script and "#SBATCH --gres=gpu:1" in script
    srun = shlex.split(script.strip().splitlines()[-1])
    assert srun[:2] == ["srun", "--ntasks=1"] and srun[4].endswith("tools/eval_robustness.py")
    train = job_script(ft, SlurmResources("gpu", nodes=2, gpus_per_node=8))
    assert "#SBATCH --nodes=2" in train and "#SBATCH --gres=gpu:8" in train


def _record(task: str, label: str, metrics: dict, seed: int = 0, world_size: int = 1) -> dict:
    return dict(
        task=task, label=label, metrics=metrics, seed=seed, world_size=world_size, cfg_options=[], amp="none",
        recorded_at=f"2026-11-28T00:00:0{seed}", recipe_changes=[], batch_per_gpu=4, accumulation=1,
        effective_batch=4, preset="real", data="real (/d)",
        backbone={"arch": {"embed_dim": 128, "depth": 4, "num_heads": 4, "patch_size": 8}, "pretraining": {}},
    )  # fmt: skip


def test_report_tables_of_the_broader_protocols():
    paper = json.loads((REPO / "docs/paper_results.json").read_text())
    records = [
        _record("knn", "MAE", {"top1_k20": 40.0, "top1_k200": 38.0}, seed=0),
        _record("knn", "MAE", {"top1_k20": 44.0, "top1_k200": 40.0}, seed=1),
        _record("ade20k", "MAE", {"mIoU": 30.0}),
        _record("ade20k-msflip", "MAE", {"mIoU": 31.5}),
        _record("linprobe", "random", {"top1": 20.0}),
        _record("linprobe", "MAE", {"top1": 50.0}),
        _record("attentive", "MAE", {"top1": 60.0}),
    ]
    knn = build_table("knn", records, paper)
    assert knn[0][:4] == ["Method", "Epochs", "k = 20", "k = 200"]
    assert knn[-1][:4] == ["MAE", "\u2013", "42.0 \u00b1 2.8 (n=2)", "39.0 \u00b1 1.4 (n=2)"]
    ade = build_table("ade20k", records, paper)
    assert ade[-1][:4] == ["MAE", "\u2013", "30.0 (n=1)", "31.5 (n=1)"]
    attentive = build_table("attentive", records, paper)
    measured = [row for row in attentive if row[-1].startswith("this suite")]
    assert [row[:4] for row in measured] == [["MAE", "\u2013", "50.0 (n=1)", "60.0 (n=1)"]]  # no attentive run: no row
    # every paper row of a new table names its source; a table without one says why
    for name in ("knn", "lowshot", "attentive", "ade20k_linear", "robustness"):
        assert paper[name]["rows"] or paper[name]["note"], name
        for row in paper[name]["rows"]:
            assert row["source"] and set(TABLES[name]["paper_cols"]) <= set(row), (name, row)


def test_report_prints_the_broader_tables_only_where_they_ran(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    record = _record("knn", "MAE", {"top1_k20": 40.0, "top1_k200": 38.0})
    record.update(
        config="c", config_file="c.py", git_commit="g", versions={"torch": "x"}, hardware={"device": "cpu"},
        wall_time_s=1.0, reproduce="r", record_key="k",
    )  # fmt: skip
    record["backbone"]["weights_sha256"] = "0" * 64
    (results / "k.json").write_text(json.dumps(record))
    text = write_report(results, tmp_path / "report").read_text()
    assert "k-NN on frozen features" in text and "Robustness of the fine-tuned classifier" not in text
    assert "Attentive probing" not in text


@pytest.mark.slow
def test_the_broader_protocols_end_to_end_on_the_mini_preset(tmp_path, synthetic_imagenet):
    """tools/run_suite.py with every new task on the synthetic sets: one record per task,
    the consumers on their producers' checkpoints, and the report's tables."""
    from pretrain.data.synthetic import write_ade20k_like

    ade = tmp_path / "ade"
    write_ade20k_like(ade, num_train=8, num_val=2, seed=0)
    robust = tmp_path / "robustness"
    made = run_tool(
        str(REPO / "tools/generate_datasets.py"), "robustness", str(robust), "--imagenet", str(synthetic_imagenet),
        "--per-class", "2", "--c-per-class", "1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    tasks = "knn,lowshot,attentive,ade20k-linear,ade20k,ade20k-msflip,finetune,robustness"
    result = run_tool(
        str(REPO / "tools/run_suite.py"), "--checkpoint", "random:tiny", "--preset", "mini", "--tasks", tasks,
        "--data", f"imagenet={synthetic_imagenet}", f"ade20k={ade}", f"robustness={robust}",
        "--out", str(tmp_path / "suite"), "--label", "control", "--amp", "none", timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = {r["task"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "suite/results").glob("*.json")))}
    assert set(records) == set(tasks.split(","))
    assert set(records["knn"]["metrics"]) >= {"top1_k20", "top1_k200"}
    assert records["lowshot"]["metrics"]["top1_10pct"] >= 0
    # k-NN and low-shot read one extraction: the second protocol found both splits cached
    assert all(entry["from_cache"] for entry in records["lowshot"]["feature_cache"].values())
    assert records["ade20k-msflip"]["tta"]["flip"] and records["ade20k-msflip"]["tta"]["passes"] == 12
    assert records["ade20k-msflip"]["input_record"] == records["ade20k"]["record_key"]
    assert Path(records["robustness"]["checkpoint"]).name.startswith("best_")
    assert records["robustness"]["input_record"] == records["finetune"]["record_key"]
    for name in ("imagenet_a_top1", "imagenet_r_top1", "sketch_top1", "v2_top1", "imagenet_c_mce"):
        assert name in records["robustness"]["metrics"]
    report = run_tool(str(REPO / "tools/report.py"), "--results", str(tmp_path / "suite/results"),
                      "--out", str(tmp_path / "report"))  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report/report.md").read_text()
    for title in (
        "k-NN on frozen features",
        "Low-shot ImageNet-1k",
        "Attentive probing (CAE)",
        "linear head on frozen features",
        "Robustness of the fine-tuned classifier",
        "mIoU ms+flip",
    ):
        assert title in text, title
    assert "| DINO | 400 | 76.1 |" in text  # a paper row beside the measured one
