"""CAE's attentive probe: the cross-attention block against torch's own attention and
the written-out formula, the tokens it attends to against timm's ViT, the frozen
encoder, the recipe's configs, and a short training run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from test_real_suite import ALLOWED_KEY, config_differences

import classification.engine  # noqa: F401
from classification.attentive import AttentivePooling, attentive_probe_head
from classification.models import ViTClassifier
from pretrain.engine.runtime import apply_lr_scaling
from suite.recipes import batch_variants

from conftest import REPO, jitter, run_tool, timm_vit_like

CONFIGS = REPO / "classification/configs"
FULL = CONFIGS / "vit-base-p16_attentive_32xb256-amp-90e_in1k.py"
REAL = CONFIGS / "real/vit-micro-p8_attentive_1xb128-30e_realsuite64.py"
MINI = CONFIGS / "vit-tiny-p16_attentive_1xb64-20e_synthetic.py"
SMALL = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4, grid=(4, 4))


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def test_cross_attention_equals_torch_multihead_attention():
    """The block = LayerNorms on query, keys, values, then nn.MultiheadAttention with
    the same projections (key bias zero: CAE has none)."""
    torch.manual_seed(0)
    pool = jitter(AttentivePooling(32, num_heads=4), scale=0.3)
    tokens = torch.randn(3, 7, 32)
    mha = torch.nn.MultiheadAttention(32, 4, bias=True, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([pool.q.weight, pool.k.weight, pool.v.weight]))
        mha.in_proj_bias.copy_(torch.cat([pool.q.bias, torch.zeros(32), pool.v.bias]))
        mha.out_proj.weight.copy_(pool.proj.weight)
        mha.out_proj.bias.copy_(pool.proj.bias)
        query = layer_norm(pool.query_token, pool.norm_q).expand(3, -1, -1)
        expected, _ = mha(query, layer_norm(tokens, pool.norm_k), layer_norm(tokens, pool.norm_v))
        torch.testing.assert_close(pool(tokens), expected[:, 0], rtol=1e-5, atol=1e-6)


def test_cross_attention_equals_the_formula_per_head():
    """softmax(q k^T / sqrt(d_head)) v for each head, in float64 with explicit loops."""
    torch.manual_seed(1)
    pool = jitter(AttentivePooling(24, num_heads=3), scale=0.3).double()
    tokens = torch.randn(2, 5, 24, dtype=torch.float64)
    with torch.no_grad():
        got = pool(tokens)
        q = layer_norm(pool.query_token[0, 0], pool.norm_q) @ pool.q.weight.T + pool.q.bias
        expected = torch.empty(2, 24, dtype=torch.float64)
        for b in range(2):
            k = layer_norm(tokens[b], pool.norm_k) @ pool.k.weight.T  # no key bias
            v = layer_norm(tokens[b], pool.norm_v) @ pool.v.weight.T + pool.v.bias
            heads = []
            for h in range(3):
                part = slice(8 * h, 8 * (h + 1))
                logits = torch.tensor(
                    [float(q[part] @ k[i, part]) / math.sqrt(8) for i in range(5)], dtype=torch.float64
                )
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                heads.append(sum(float(weights[i]) * v[i, part] for i in range(5)))
            expected[b] = torch.cat(heads) @ pool.proj.weight.T + pool.proj.bias
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_initialisation_follows_cae():
    """Zero query (so the first forward averages the values of all tokens), truncated
    normal 0.02 projections with zero biases, BN without affine, classifier N(0, 0.01)."""
    torch.manual_seed(0)
    head = attentive_probe_head(768, num_heads=12, num_classes=1000)
    pool, bn, classifier = head
    assert torch.equal(pool.query_token, torch.zeros(1, 1, 768))
    for linear in (pool.q, pool.k, pool.v, pool.proj):
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert pool.k.bias is None and all(not b.any() for b in (pool.q.bias, pool.v.bias, pool.proj.bias))
    assert not bn.affine and bn.eps == 1e-5 and bn.momentum == 0.1
    assert classifier.weight.std().item() == pytest.approx(0.01, rel=0.02) and not classifier.bias.any()
    # CAE's parts, counted by hand: query token, 3 LayerNorms, q/k/v/proj weights, q/v/proj biases
    assert sum(p.numel() for p in pool.parameters()) == 768 + 3 * 2 * 768 + 4 * 768 * 768 + 3 * 768
    tokens = torch.randn(2, 9, 768)
    with torch.no_grad():
        uniform = pool.proj(pool.v(layer_norm(tokens, pool.norm_v)).mean(dim=1))
        torch.testing.assert_close(pool(tokens), uniform, rtol=1e-5, atol=1e-6)


def test_refuses_tokens_of_another_width():
    with pytest.raises(ValueError, match="not divisible"):
        AttentivePooling(30, num_heads=4)
    with pytest.raises(ValueError, match=r"\(batch, length, 32\)"):
        AttentivePooling(32, num_heads=4)(torch.randn(2, 32))


def test_probe_attends_to_every_encoder_token_after_the_final_norm():
    """Keys and values are CAE's ``x`` after ``self.norm``: the class token and all patch
    tokens of the last block, after the final LayerNorm - timm's forward_features."""
    model = jitter(ViTClassifier(8, dict(arch=SMALL, img_size=32), head="attentive"))
    assert model.head[0].num_heads == 4  # the encoder's number of heads
    seen = []
    model.head[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        expected = timm_vit_like(model.backbone).forward_features(x)
    assert seen[0].shape == (2, 1 + 16, 32)
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(logits, model.head(expected), rtol=1e-5, atol=1e-5)


def test_encoder_is_frozen_and_bit_identical_after_training_steps():
    torch.manual_seed(0)
    model = jitter(ViTClassifier(4, dict(arch=SMALL, img_size=32), head="attentive"))
    model.train()
    assert not model.backbone.training and model.head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    wrapper = build_optim_wrapper(
        model, dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.4, momentum=0.9, weight_decay=0.0))
    )
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3] * 2)
    assert not model.features(x).requires_grad  # no graph through the encoder
    for _ in range(3):
        wrapper.update_params(model(x, y, mode="loss")["loss"])
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items())
    changed = [k for k, v in model.head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert {"0.query_token", "0.q.weight", "0.k.weight", "0.v.weight", "0.proj.weight", "2.weight"} <= set(changed)
    assert "1.running_mean" in changed  # the BatchNorm trains with batch statistics
    model.eval()
    with torch.no_grad():  # and evaluates with its running ones: per-sample logits do not depend on the batch
        torch.testing.assert_close(model(x)[:1], model(x[:1]), rtol=1e-5, atol=1e-6)


def test_full_recipe_is_caes():
    cfg = Config.fromfile(str(FULL))
    assert cfg.model.head == "attentive" and cfg.model.data_preprocessor.mixup is None
    assert cfg.model.get("label_smoothing", 0.0) == 0.0
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.momentum, optimizer.weight_decay) == ("SGD", 0.9, 0.0)
    assert "clip_grad" not in cfg.optim_wrapper
    assert cfg.train_dataloader.dataset.transform == "linprobe" and cfg.val_dataloader.dataset.transform == "eval"
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.eta_min, cosine.end) == (
        "LinearLR",
        10,
        "CosineAnnealingLR",
        1e-6,
        90,
    )
    assert cfg.train_cfg.max_epochs == 90
    # lr 0.4 at CAE's 32 GPUs x 256, in every batch variant that keeps that batch
    variants = {path.name: path for path in batch_variants(FULL)}
    assert set(variants) == {
        FULL.name,
        "vit-base-p16_attentive_16xb512-amp-90e_in1k.py",
        "vit-base-p16_attentive_8xb1024-amp-90e_in1k.py",
        "vit-base-p16_attentive_1xb1024-accum8-amp-90e_in1k.py",
    }
    for name, world_size in (
        (FULL.name, 32),
        ("vit-base-p16_attentive_16xb512-amp-90e_in1k.py", 16),
        ("vit-base-p16_attentive_8xb1024-amp-90e_in1k.py", 8),
    ):
        variant = Config.fromfile(str(variants[name]))
        apply_lr_scaling(variant, world_size)
        assert variant.optim_wrapper.optimizer.lr == pytest.approx(0.4), name
    single = Config.fromfile(str(variants["vit-base-p16_attentive_1xb1024-accum8-amp-90e_in1k.py"]))
    apply_lr_scaling(single, 1)
    assert single.optim_wrapper.optimizer.lr == pytest.approx(0.4)


@pytest.mark.parametrize("shrunk", [REAL, MINI], ids=["real", "mini"])
def test_small_presets_differ_from_the_recipe_only_in_size_and_schedule(shrunk):
    differences = config_differences(Config.fromfile(str(FULL)), Config.fromfile(str(shrunk)))
    assert differences and [k for k in differences if not ALLOWED_KEY.fullmatch(k)] == []
    assert "model.head" not in differences and "optim_wrapper.optimizer.momentum" not in differences


@pytest.mark.slow
def test_short_run_writes_top1_record(synthetic_imagenet, tmp_path):
    from suite.runner import prepare_backbone

    backbone = prepare_backbone("random:tiny", tmp_path / "backbone")
    data = str(synthetic_imagenet)
    result = run_tool(
        str(REPO / "tools/train.py"),
        str(MINI),
        "--backbone",
        str(backbone),
        "--work-dir",
        str(tmp_path / "run"),
        "--amp",
        "none",
        "--cfg-options",
        "train_cfg.max_epochs=2",
        "train_cfg.val_interval=2",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        f"test_dataloader.dataset.data_root={data}",
        "train_dataloader.num_workers=0",
        "val_dataloader.num_workers=0",
        "randomness.seed=0",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "run/result.json").read_text())
    assert record["epoch"] == 2 and record["iter"] == record["max_iters"] == 2 * 320 // 64
    assert 0.0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 100.0
    assert "head='attentive'" in record["config"] or 'head="attentive"' in record["config"]
