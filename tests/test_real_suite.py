"""The real-image mini suite: its datasets (layouts, checker, split), the published
teacher (initialisation and update schedule), the real preset's configs against the
full recipes, and the discrimination study's arithmetic."""

import json
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from pretrain.data import real_suite
from pretrain.data.checks import check_dataset
from pretrain.data.real_suite import SPLITS, write_real_suite
from pretrain.engine.hooks import TeacherEMAHook
from suite.runner import PRESETS

from conftest import REPO, TINY_CONFIG, build_runner, run_tool, tiny_options

SMALL = dict(cls_per_class=(4, 2), seg_count=(6, 3), det_count=(8, 4))


@pytest.fixture(scope="module")
def suite_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("realsuite")
    return root, write_real_suite(root, **SMALL)


# --------------------------------------------------------------------------- datasets


def test_layouts_pass_the_checker(suite_data):
    root, recipe = suite_data
    for layout, folder in (("imagenet", "imagenet"), ("ade20k", "ade"), ("coco", "coco")):
        report = check_dataset(root / folder, layout)
        assert report.ok, (layout, report.layout, report.unreadable)
    assert recipe["counts"]["imagenet"] == {"train": 8 * 4, "val": 8 * 2}
    assert recipe["counts"]["pretrain"] == {"train": 8 * 4 + 6 + 8}
    result = run_tool("tools/check_dataset.py", "coco", str(root / "coco"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_label_maps_and_instances_are_the_published_formats(suite_data):
    from pycocotools import mask as mask_utils

    root, _ = suite_data
    ade = root / "ade/ADEChallengeData2016"
    for ann in (ade / "annotations/training").glob("*.png"):
        labels = np.asarray(Image.open(ann))
        assert labels.dtype == np.uint8 and labels.ndim == 2
        assert set(np.unique(labels)) <= set(range(1, len(real_suite.MATERIALS) + 1))  # 0 = ignore, unused
        assert Image.open(ade / "images/training" / f"{ann.stem}.jpg").size == labels.shape[::-1]
    doc = json.loads((root / "coco/annotations/instances_val2017.json").read_text())
    assert [c["name"] for c in doc["categories"]] == list(real_suite.OBJECTS)
    assert doc["annotations"]
    for ann in doc["annotations"]:
        mask = mask_utils.decode(ann["segmentation"])
        ys, xs = np.nonzero(mask)
        # the box is exactly the mask's extent, the area its pixel count
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == mask.sum()


def test_generation_is_deterministic_and_refuses_another_recipe(tmp_path, suite_data):
    root, _ = suite_data
    again = tmp_path / "again"
    write_real_suite(again, **SMALL)
    for name in ("imagenet/val/brick/brick_00001.png", "coco/annotations/instances_train2017.json"):
        assert (again / name).read_bytes() == (root / name).read_bytes()
    assert write_real_suite(again, **SMALL)["args"] == json.loads((root / "recipe.json").read_text())["args"]
    with pytest.raises(FileExistsError, match="delete the folder"):
        write_real_suite(again, **{**SMALL, "seed": 1})


def test_no_source_pixel_is_in_both_splits(tmp_path, monkeypatch):
    """Every material photograph is replaced by one whose left half is black and right
    half white: then every material pixel of a train image must be dark and of a
    validation image bright, whatever the crops, scales and mosaics did."""
    halves = np.zeros((240, 320), np.uint8)
    halves[:, 160:] = 255
    monkeypatch.setattr(real_suite, "load_materials", lambda: {name: halves for name in real_suite.MATERIALS})
    root = tmp_path / "halves"
    write_real_suite(root, **SMALL)

    def material_pixels(path, masks=()):
        grey = np.asarray(Image.open(path).convert("L")).astype(int)
        keep = np.ones(grey.shape, bool)
        for mask in masks:
            keep &= ~mask.astype(bool)
        return grey[keep]

    from pycocotools import mask as mask_utils

    files = {"train": [], "val": []}
    for split, ade_split in zip(SPLITS, ("training", "validation"), strict=True):
        files[split] += [(p, ()) for p in (root / "imagenet" / split).rglob("*.png")]
        files[split] += [(p, ()) for p in (root / "ade/ADEChallengeData2016/images" / ade_split).glob("*.jpg")]
        doc = json.loads((root / "coco/annotations" / f"instances_{split}2017.json").read_text())
        for image in doc["images"]:
            masks = [mask_utils.decode(a["segmentation"]) for a in doc["annotations"] if a["image_id"] == image["id"]]
            # a JPEG halo around each pasted object is not material: grow the masks by 2 px
            grown = [np.asarray(Image.fromarray(m * 255).filter(_max_filter())) > 0 for m in masks]
            files[split].append((root / "coco" / f"{split}2017" / image["file_name"], grown))
    assert all(files[split] for split in SPLITS)
    for path, masks in files["train"]:
        assert material_pixels(path, masks).max() < 64, path
    for path, masks in files["val"]:
        assert material_pixels(path, masks).min() > 191, path


def _max_filter():
    from PIL import ImageFilter

    return ImageFilter.MaxFilter(5)


def test_object_instances_are_split_before_pasting():
    digits = real_suite.digit_instances(seed=0)
    faces = real_suite.face_instances()
    coins = real_suite.coin_instances()
    for objects in (digits, faces, coins):
        train_ids = {obj[0] for obj in objects["train"]}
        val_ids = {obj[0] for obj in objects["val"]}
        assert train_ids and val_ids and not train_ids & val_ids
    assert len(coins["train"]) + len(coins["val"]) >= 18  # the separable coins of the photograph
    for _, _pixels, mask in coins["train"] + coins["val"]:
        h, w = mask.shape
        assert 0.8 <= h / w <= 1.25 and mask.mean() > 0.6  # one round coin per segment


# --------------------------------------------------------------------------- the published teacher


def published_schedule(base: float, final: float, epochs: int) -> np.ndarray:
    """The published per-epoch momentum schedule (DINO's cosine_scheduler, niter_per_ep=1)."""
    iters = np.arange(epochs)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / epochs))


class FakeRunner:
    """What TeacherEMAHook reads from mmengine's Runner."""

    def __init__(self, max_iters: int, accumulate: int = 1, start_iter: int = 0):
        from types import SimpleNamespace

        self.max_iters, self.iter, self.epoch, self.max_epochs = max_iters, start_iter, 0, 1
        self.momenta = []
        self.model = SimpleNamespace(has_teacher=True, update_teacher=self.momenta.append)
        self.optim_wrapper = SimpleNamespace(
            should_update=lambda: (self.iter + 1) % accumulate == 0 or self.iter + 1 == max_iters
        )
        self.message_hub = SimpleNamespace(update_scalar=lambda *args: None)

    def run(self, hook: TeacherEMAHook) -> list[float]:
        for i in range(self.iter, self.max_iters):
            self.iter = i
            hook.after_train_iter(self, i)
        return self.momenta


@pytest.mark.parametrize("max_iters,accumulate", [(7, 1), (300, 1), (301, 1), (1000, 1), (4096, 2), (2001, 3)])
def test_count_schedule_gives_the_published_updates_at_any_length(max_iters, accumulate):
    hook = TeacherEMAHook(interval="count", num_updates=300, momentum=0.96, final_momentum=0.99)
    momenta = FakeRunner(max_iters, accumulate).run(hook)
    assert len(momenta) == 300
    np.testing.assert_allclose(momenta, published_schedule(0.96, 0.99, 300), rtol=0, atol=1e-12)


def test_count_schedule_spreads_updates_evenly_and_resumes():
    hook = TeacherEMAHook(interval="count", num_updates=10)
    runner = FakeRunner(100)
    steps = []
    runner.model.update_teacher = lambda m: steps.append(runner.iter + 1)
    runner.run(hook)
    assert steps == [10 * (k + 1) for k in range(10)]  # the k-th after iteration ceil((k + 1) T / U)
    # a run resumed at iteration 55 applies exactly the updates still due
    resumed = FakeRunner(100, start_iter=55)
    hook = TeacherEMAHook(interval="count", num_updates=10)
    hook.updates_done = hook.updates_due(resumed.iter, resumed.max_iters)
    assert resumed.run(hook) == list(published_schedule(0.96, 0.99, 10)[5:])


def test_count_schedule_in_a_real_run(tmp_path, small_imagenet, monkeypatch):
    from pretrain.engine.model import SdAEPretrainer

    momenta = []
    original = SdAEPretrainer.update_teacher
    monkeypatch.setattr(SdAEPretrainer, "update_teacher", lambda model, m: (momenta.append(m), original(model, m))[1])
    hooks = [dict(type="TeacherEMAHook", interval="count", num_updates=12)]
    options = tiny_options(small_imagenet, **{"train_cfg.max_epochs": 3, "custom_hooks": hooks})
    build_runner(TINY_CONFIG, tmp_path, options).train()  # 3 epochs x 3 iterations < 12 updates
    np.testing.assert_allclose(momenta, published_schedule(0.96, 0.99, 12), rtol=0, atol=1e-12)


def test_random_teacher_has_timm_0_3_2_initialisation():
    """timm 0.3.2 ViT: trunc-normal(0.02) Linear weights and zero biases, LayerNorm at
    identity, torch's default Conv2d init for the patch projection (kaiming-uniform with
    a = sqrt(5): bound 1 / sqrt(fan_in), also for the bias), trunc-normal(0.02) class
    token and position embedding. The student keeps MAE's xavier initialisation."""
    from pretrain.models import SdAE

    torch.manual_seed(0)
    model = SdAE(arch="small", img_size=224, decoder=dict(embed_dim=64, depth=1, num_heads=2))
    teacher, student = model.teacher, model.student
    for name, module in teacher.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert abs(module.weight.std().item() - 0.02) < 0.0015, name
            assert abs(module.weight.mean().item()) < 0.001, name
            assert module.bias is None or not module.bias.any(), name
        elif isinstance(module, torch.nn.LayerNorm):
            assert (module.weight == 1).all() and not module.bias.any(), name
    proj = teacher.patch_embed.proj
    bound = 1 / (3 * 16 * 16) ** 0.5
    assert 0.98 * bound < proj.weight.abs().max().item() <= bound
    assert abs(proj.weight.std().item() - bound / 3**0.5) < 0.02 * bound
    assert proj.bias.abs().max().item() <= bound and proj.bias.any()
    assert abs(teacher.pos_embed.std().item() - 0.02) < 0.001
    assert abs(teacher.cls_token.std().item() - 0.02) < 0.004
    # the student is untouched: xavier-uniform (std sqrt(2 / (fan_in + fan_out)))
    qkv = student.blocks[0].attn.qkv.weight
    assert abs(qkv.std().item() - (2 / (384 + 3 * 384)) ** 0.5) < 0.001


# --------------------------------------------------------------------------- the real preset


FULL = {task: recipe.config for task, recipe in PRESETS["full"].items()}
# The keys a real-preset config may change against its full recipe, by reason (README,
# "The real-image mini suite"). Anything else - optimiser kind, betas, weight decay,
# layer decay, augmentations, losses, heads' structure, metrics - must be the recipe's.
ALLOWED = {
    "data location": r"(.*\.)?data_root|.*_evaluator\.ann_file",
    "dataset size": r"(.*\.)?num_classes|classes|.*\.metainfo\.classes",
    "model size": r"model\.backbone\.(img_size|out_indices)|width|channels|.*(in|out|feat|conv_out|fc_out)_channels"
    r"|.*\.channels|strides|.*\.(featmap_strides|finest_scale)|model\.rpn_head\.anchor_generator\.strides",
    "resolution": r"crop_size|multi_scale|.*\.(crop_size|scale|scales|img_size|size|stride)|.*filter_cfg\.min_size"
    r"|(.*\.)?(train|test)_pipeline\..*|.*\.pipeline\..*\.(scale|scales|crop_size)|.*\.transforms\..*\.(scales|crop_size)",
    "proposals and RoIs per image": r"model\.(train|test)_cfg\.(rpn|rpn_proposal|rcnn)\."
    r"(sampler\.num|nms_pre|max_per_img)",
    "detections kept for evaluation": r"model\.test_cfg\.rcnn\.score_thr",
    "schedule": r"max_epochs|warmup_epochs|max_iters|train_cfg\.(max_epochs|max_iters|val_interval)"
    r"|param_scheduler\..*|lr_scaling\.base_lr|optim_wrapper\.optimizer\.lr|.*\.batch_size",
    "one CPU process": r".*\.(num_workers|persistent_workers|pin_memory)|default_hooks\..*",
}
ALLOWED_KEY = re.compile("|".join(f"(?:{p})" for p in ALLOWED.values()))


def _holds_dict(value) -> bool:
    return isinstance(value, dict) or (isinstance(value, list | tuple) and any(map(_holds_dict, value)))


def _flat(value, prefix: str = "") -> dict:
    """Dotted keys down to the leaves; lists of settings (pipelines) by index, lists of
    plain values (scales) as one value."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list | tuple) and _holds_dict(value):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value}


def config_differences(full: Config, shrunk: Config) -> list[str]:
    a, b = _flat(full.to_dict()), _flat(shrunk.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


@pytest.mark.parametrize("task", sorted(FULL))
def test_real_preset_differs_from_the_full_recipe_only_in_size_and_schedule(task):
    full = Config.fromfile(str(REPO / FULL[task]))
    shrunk = Config.fromfile(str(REPO / PRESETS["real"][task].config))
    differences = config_differences(full, shrunk)
    assert differences, "the real preset must at least shrink the recipe"
    assert [k for k in differences if not ALLOWED_KEY.fullmatch(k)] == []
    # the check can fail: a change of an optimisation key (a protocol's setting where nothing
    # is trained: k-NN, low-shot) is caught
    if "optim_wrapper" in shrunk:
        shrunk.optim_wrapper.paramwise_cfg = dict(shrunk.optim_wrapper.get("paramwise_cfg", {}), layer_decay=0.9)
        shrunk.optim_wrapper.optimizer.weight_decay = 0.3
        changed = "optim_wrapper.optimizer.weight_decay"
    else:
        setting = next(iter(shrunk[shrunk.protocol]))
        shrunk[shrunk.protocol][setting] = "changed"
        changed = f"{shrunk.protocol}.{setting}"
    assert changed in [k for k in config_differences(full, shrunk) if not ALLOWED_KEY.fullmatch(k)]


# --------------------------------------------------------------------------- the study's arithmetic


def test_summary_and_separation_against_numpy():
    from studies.discrimination import CONTROL, markdown_table, separation, summarise

    values = {CONTROL: [40.0, 44.0, 42.0], "mae": [50.0, 49.0, 55.0], "sdae": [44.0, 41.0, 47.0]}
    records = [dict(method=m, seed=s, linprobe_top1=v) for m, vs in values.items() for s, v in enumerate(vs)]
    rows = summarise(records, list(values))
    for row in rows:
        expected = np.array(values[row["method"]])
        assert row["linprobe_top1"]["mean"] == pytest.approx(expected.mean())
        assert row["linprobe_top1"]["std"] == pytest.approx(expected.std(ddof=1))
        assert row["linprobe_top1"]["n"] == 3
    verdict = {s["method"]: s for s in separation(rows)}
    control = np.array(values[CONTROL])
    for method in ("mae", "sdae"):
        mine = np.array(values[method])
        assert verdict[method]["gap"] == pytest.approx(mine.mean() - control.mean())
        assert verdict[method]["spread"] == pytest.approx(mine.std(ddof=1) + control.std(ddof=1))
    assert verdict["mae"]["separated"] and not verdict["sdae"]["separated"]
    # one seed has no spread: a gap of any size is not called a separation
    single = summarise([r for r in records if r["seed"] == 0], list(values))
    assert [s["separated"] for s in separation(single)] == [None, None]
    table = markdown_table(dict(summary=single, separation=separation(single), pretrain_epochs=150))
    assert table.count("n/a (1 seed)") == 2 and "stretched to 150 epochs" in table


def test_study_refuses_a_run_without_the_control(tmp_path):
    from studies.discrimination import run

    with pytest.raises(ValueError, match="control"):
        run(tmp_path, [0], ("mae", "sdae"))
    with pytest.raises(ValueError, match="unknown methods"):
        run(tmp_path, [0], ("random-init", "byol"))
