"""Suite runner, results store, report and visualisation."""

import json

import pytest
import torch

from suite.report import ProvenanceError, build_table, load_records, to_markdown, write_report
from suite.runner import REQUIRED_FIELDS

from conftest import REPO, run_tool


def fixed_record(task: str, metrics: dict, label: str = "SdAE", epochs: int = 10, at: str = "T1") -> dict:
    return {
        "task": task, "stage": "imagenet", "metrics": metrics, "label": label, "preset": "mini",
        "record_key": f"{task}-mini-abc", "recorded_at": at, "data": "synthetic (/data)", "config": "cfg text",
        "config_file": "classification/configs/x.py", "git_commit": "deadbeef", "versions": {"torch": "2.14.1"},
        "hardware": {"device": "x86_64", "gpus": 0}, "wall_time_s": 12.5, "reproduce": "python tools/train.py x.py",
        "backbone": {"weights_sha256": "ab" * 32, "pretraining": {"method": "SdAE", "epochs": epochs},
                     "arch": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, "grid": [6, 6]}},
        "world_size": 1, "batch_per_gpu": 32, "accumulation": 1, "effective_batch": 32, "seed": 0,
        "cfg_options": [], "recipe_changes": [], "amp": None,
    }  # fmt: skip


def test_imagenet_table_markdown_is_exact(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    records = [
        fixed_record("finetune", {"top1": 41.25, "top5": 90.0}),
        fixed_record("linprobe", {"top1": 20.0, "top5": 60.0}),
        fixed_record("linprobe", {"top1": 15.5, "top5": 55.0}, label="Random init", epochs=0),
    ]
    for i, record in enumerate(records):
        (results / f"{i}.json").write_text(json.dumps(record))
    paper = {
        "imagenet": {
            "rows": [
                {"method": "SdAE", "epochs": 300, "finetune_top1": 84.1, "linear_top1": 64.9},
                {"method": "Scratch", "epochs": 300, "finetune_top1": 81.8, "linear_top1": None},
            ]
        }
    }
    markdown = to_markdown("T2", build_table("imagenet", load_records(results), paper))
    assert markdown == (
        "### T2\n\n"
        "| Method | Epochs | Fine-tune | Linear | Batch (GPUs x per GPU x accum.) | Changes from the recipe "
        "| Source |\n"
        "|---|---|---|---|---|---|---|\n"
        "| SdAE | 300 | 84.1 | 64.9 | \u2013 | \u2013 | paper |\n"
        "| Scratch | 300 | 81.8 | \u2013 | \u2013 | \u2013 | paper |\n"
        "| SdAE | 10 | 41.2 (n=1) | 20.0 (n=1) | finetune 1x32x1 = 32; linprobe 1x32x1 = 32 | none "
        "| this suite: synthetic data, mini preset, ViT-Ti/16 |\n"
        "| Random init | 0 | \u2013 | 15.5 (n=1) | linprobe 1x32x1 = 32 | none "
        "| this suite: synthetic data, mini preset, ViT-Ti/16 |\n"
    )


def test_table5_shows_only_ablation_runs(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.json").write_text(json.dumps(fixed_record("finetune", {"top1": 33.0}, label="ablation: full image")))
    (results / "b.json").write_text(json.dumps(fixed_record("finetune", {"top1": 44.0}, at="T2")))
    text = write_report(results, tmp_path / "report").read_text()
    table5 = text[text.index("### Table 5") :]
    assert "| full image + teacher norm | 100 | 84.0 | \u2013 | \u2013 | paper |" in table5
    assert "| full image | 10 | 33.0 (n=1) | 1x32x1 = 32 | none | this suite" in table5 and "44.0" not in table5
    (results / "a.json").unlink()
    assert "Table 5" not in write_report(results, tmp_path / "report2").read_text()


def test_report_refuses_records_without_provenance(tmp_path):
    record = fixed_record("finetune", {"top1": 1.0})
    del record["git_commit"]
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(ProvenanceError, match=r"bad\.json: no provenance field\(s\) \['git_commit'\]"):
        load_records(tmp_path)


def test_report_writes_tables_csv_and_plots(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work/run/vis_data"
    results.mkdir()
    work.mkdir(parents=True)
    (work / "scalars.json").write_text("\n".join(json.dumps({"loss": 2.0 - i / 10, "step": i}) for i in range(1, 6)))
    record = fixed_record("finetune", {"top1": 30.0, "top5": 80.0}) | {"work_dir": str(tmp_path / "work")}
    (results / "r.json").write_text(json.dumps(record))
    report = write_report(results, tmp_path / "report", REPO / "docs/benchmarks/pretrain_cpu_vit-base_b8.json")
    text = report.read_text()
    assert "Table 1" in text and "| fold:3 |" in text and "| SdAE | 10 | 30.0 (n=1) |" in text
    for name in ("imagenet_bars.png", "curve_finetune.png", "table_imagenet.csv", "table1_efficiency.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0


@pytest.mark.slow
def test_suite_records_then_skips(tmp_path, synthetic_imagenet):
    args = [
        str(REPO / "tools/run_suite.py"),
        "--checkpoint",
        "random:tiny",
        "--tasks",
        "linprobe",
        "--data",
        f"imagenet={synthetic_imagenet}",
        "--out",
        str(tmp_path),
        "--label",
        "control",
    ]
    first = run_tool(*args, "--preset", "mini")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "control: linprobe done in" in first.stdout
    (record_path,) = (tmp_path / "results").glob("linprobe-mini-*.json")
    record = json.loads(record_path.read_text())
    assert all(record.get(field) for field in REQUIRED_FIELDS)
    from pretrain.checkpoints import read_backbone

    backbone = read_backbone(tmp_path / "backbones/random-tiny.safetensors")
    assert record["backbone"]["weights_sha256"] == backbone.metadata["weights_sha256"]
    assert record["backbone"]["pretraining"]["method"] == "random init"
    assert "tools/train.py" in record["reproduce"] and record["stage"] == "imagenet"
    second = run_tool(*args, "--preset", "mini")
    assert second.returncode == 0 and "linprobe already recorded, skipped" in second.stdout
    assert json.loads(record_path.read_text()) == record


def test_suite_explains_missing_data(tmp_path):
    result = run_tool(
        str(REPO / "tools/run_suite.py"), "--checkpoint", "random:tiny", "--tasks", "ade20k", "--out", str(tmp_path)
    )
    assert result.returncode == 1 and "ade20k=PATH" in result.stderr


@pytest.fixture(scope="module")
def tiny_training_checkpoint(tmp_path_factory):
    """A checkpoint as tools/train.py writes it, for the tiny SdAE config."""
    from mmengine.config import Config

    from pretrain.models import SdAE

    cfg = Config.fromfile(REPO / "pretrain/configs/sdae_vit-tiny-p16_1xb32-10e_synthetic.py")
    kwargs = {k: v for k, v in cfg.model.items() if k != "type"}
    torch.manual_seed(0)
    model = SdAE(**kwargs)
    path = tmp_path_factory.mktemp("ckpt") / "epoch_1.pth"
    torch.save(
        {
            "meta": {"cfg": cfg.pretty_text, "epoch": 1},
            "state_dict": {f"sdae.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path, model


def test_visualisation_writes_the_three_pngs(tiny_training_checkpoint, synthetic_imagenet, tmp_path):
    path, _ = tiny_training_checkpoint
    image = next((synthetic_imagenet / "val").rglob("*.JPEG"))
    result = run_tool(str(REPO / "tools/visualize.py"), str(path), str(image), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("mask.png", "teacher_student_cosine.png", "cls_attention.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_explicit_attention_reproduces_the_fused_block(tiny_training_checkpoint):
    """The explicit-softmax weights, applied to the values, give the block's own
    (fused SDPA) attention output: the plotted weights are the ones the model uses."""
    from pretrain.visualize import cls_attention

    _, model = tiny_training_checkpoint
    encoder = model.student.eval()
    imgs = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        weights = cls_attention(encoder, imgs)
        assert weights.shape == (2, 36) and torch.all(weights > 0)
        tokens = encoder.embed_patches(imgs)
        x = torch.cat([(encoder.cls_token + encoder.pos_embed[:, :1]).expand(2, -1, -1), tokens], 1)
        for block in encoder.blocks[:-1]:
            x = block(x)
        last = encoder.blocks[-1]
        attn, h = last.attn, last.norm1(x)
        b, n, d = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        full = torch.softmax(qkv[0] * attn.scale @ qkv[1].transpose(-2, -1), dim=-1)
        manual = attn.proj((full @ qkv[2]).transpose(1, 2).reshape(b, n, d))
        torch.testing.assert_close(manual, attn(h), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(full[:, :, 0, 1:].mean(1), weights)
