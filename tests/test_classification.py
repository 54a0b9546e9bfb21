"""ImageNet fine-tuning and linear probing (MAE protocol) on canonical backbones."""

import json
from functools import partial

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from timm.models.vision_transformer import VisionTransformer as TimmViT

import classification.engine  # noqa: F401
from classification.data import ImageNetClassification
from classification.models import MixupDataPreprocessor, ViTClassifier
from pretrain.checkpoints import convert, read_backbone, save_backbone

from conftest import REPO, convert_source_layouts, jitter, run_tool

TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, grid=(6, 6))
FINETUNE = REPO / "classification/configs/vit-tiny-p16_finetune_1xb32-4e_synthetic.py"
LINPROBE = REPO / "classification/configs/vit-tiny-p16_linprobe_1xb64-20e_synthetic.py"


def mae_layer_id(name: str, num_layers: int = 12) -> int:
    """MAE's util/lr_decay.py rule, written out."""
    name = name.removeprefix("backbone.")
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def test_layer_decay_groups_follow_mae():
    model = ViTClassifier(10, dict(arch=TINY, img_size=96))
    wrapper = build_optim_wrapper(
        model,
        dict(
            constructor="LayerDecayOptimWrapperConstructor",
            optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
            paramwise_cfg=dict(layer_decay=0.65),
        ),
    )
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = group_of[id(param)]
        scale = 0.65 ** (13 - mae_layer_id(name))
        assert group["lr"] == pytest.approx(1e-3 * scale), name
        no_decay = param.ndim == 1 or name in ("backbone.pos_embed", "backbone.cls_token")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert group_of[id(model.backbone.patch_embed.proj.weight)]["lr"] == pytest.approx(1e-3 * 0.65**13)
    assert group_of[id(model.head.weight)]["lr"] == pytest.approx(1e-3)


def test_finetune_head_equals_timm_global_pool_vit():
    """MAE fine-tuning = timm's ViT with global_pool='avg' and fc_norm (no final norm)."""
    model = jitter(ViTClassifier(10, dict(arch=TINY, img_size=96)))
    ref = TimmViT(
        img_size=96,
        patch_size=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        num_classes=10,
        global_pool="avg",
        fc_norm=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    state = {
        k.removeprefix("backbone."): v for k, v in model.state_dict().items() if not k.startswith("backbone.norm.")
    }
    ref.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_linear_probe_head_and_freezing():
    model = jitter(ViTClassifier(10, dict(arch=TINY, img_size=96), head="linear"))
    bn, _ = model.head
    assert not bn.affine and bn.eps == 1e-6
    assert all(not p.requires_grad for p in model.backbone.parameters())
    ref = TimmViT(
        img_size=96,
        patch_size=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        num_classes=0,
        global_pool="token",
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    ref.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    )
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(ref.forward_head(ref.forward_features(x), pre_logits=True)))
    model.train()
    assert not model.backbone.training and model.head.training
    wrapper = build_optim_wrapper(
        model,
        dict(
            constructor="LarsOptimWrapperConstructor",
            optimizer=dict(type="Lars", lr=0.1, momentum=0.9, weight_decay=0.0),
        ),
    )
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loss = model(x, torch.tensor([0, 1, 2, 3]), mode="loss")["loss"]
    wrapper.update_params(loss)
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items())


def test_lars_adapts_weights_but_not_biases():
    """MAE's LARS: update = lr * (trust * |w| / |g|) * g for weights, lr * g for biases (momentum 0 here)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 3)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    wrapper = build_optim_wrapper(
        head,
        dict(
            constructor="LarsOptimWrapperConstructor",
            optimizer=dict(type="Lars", lr=0.5, momentum=0.0, weight_decay=0.0),
        ),
    )
    head(torch.randn(8, 5)).pow(2).sum().backward()
    gw, gb = head.weight.grad.clone(), head.bias.grad.clone()
    wrapper.step()
    trust = 0.001 * w0.norm() / gw.norm()
    torch.testing.assert_close(head.weight.detach(), w0 - 0.5 * trust * gw)
    torch.testing.assert_close(head.bias.detach(), b0 - 0.5 * gb)


def test_mixup_preprocessor_makes_soft_targets_in_training_only():
    pre = MixupDataPreprocessor(8, mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1))
    data = dict(inputs=torch.randn(4, 3, 32, 32), data_samples=torch.tensor([0, 1, 2, 3]))
    train = pre(dict(data), training=True)
    assert train["data_samples"].shape == (4, 8)
    torch.testing.assert_close(train["data_samples"].sum(1), torch.ones(4))
    assert torch.equal(pre(dict(data), training=False)["data_samples"], data["data_samples"])


def test_eval_transform_and_labels(synthetic_imagenet):
    ds = ImageNetClassification(str(synthetic_imagenet), "val", "eval", img_size=96)
    assert len(ds) == 80 and ds[0]["inputs"].shape == (3, 96, 96)
    assert [ds[i]["data_samples"] for i in (0, 10, 79)] == [0, 1, 7]


@pytest.fixture(scope="module")
def project_and_mae_backbones(tmp_path_factory):
    return convert_source_layouts(tmp_path_factory.mktemp("backbones"), img_size=96)


@pytest.mark.slow
@pytest.mark.parametrize("config,source", [(FINETUNE, "project"), (LINPROBE, "mae")])
def test_short_run_writes_top1_record(config, source, project_and_mae_backbones, synthetic_imagenet, tmp_path):
    backbone = project_and_mae_backbones[source]
    data = str(synthetic_imagenet)
    result = run_tool(
        str(REPO / "tools/train.py"),
        str(config),
        "--backbone",
        str(backbone),
        "--work-dir",
        str(tmp_path),
        "--cfg-options",
        "train_cfg.max_epochs=2",
        "train_cfg.val_interval=2",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        "train_dataloader.num_workers=0",
        "val_dataloader.num_workers=0",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["task"] == "imagenet" and record["epoch"] == 2
    assert 0.0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 100.0
    assert record["backbone"]["weights_sha256"] == read_backbone(backbone).metadata["weights_sha256"]
    assert record["backbone"]["source_format"] == {"project": "sdae-suite", "mae": "official-mae"}[source]
    assert record["git_commit"] and record["versions"]["torch"] and "--backbone" in record["command"]
    (checkpoint,) = tmp_path.glob("best_top1_epoch_2.pth")
    tested = run_tool(
        str(REPO / "tools/test.py"),
        str(config),
        str(checkpoint),
        "--backbone",
        str(backbone),
        "--work-dir",
        str(tmp_path / "test"),
        "--cfg-options",
        f"test_dataloader.dataset.data_root={data}",
        "test_dataloader.num_workers=0",
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    test_record = json.loads((tmp_path / "test/result.json").read_text())
    assert test_record["split"] == "test" and test_record["metrics"] == record["metrics"]
    assert test_record["checkpoint"] == str(checkpoint)


def test_missing_backbone_is_explained():
    with pytest.raises(ValueError, match="--backbone FILE"):
        ViTClassifier(10, dict(img_size=96))


def test_save_read_convert_roundtrip_builds_classifier(tmp_path):
    from pretrain.models import build_vit

    path = tmp_path / "b.safetensors"
    save_backbone(path, convert(build_vit("tiny", img_size=96).state_dict()).backbone)
    model = ViTClassifier(8, dict(checkpoint=str(path), img_size=96))
    assert model.backbone_meta["file"] == str(path)
