"""The converter on the official key layouts of each supported source, built from
timm's own model classes with random weights: the converted encoder must give the
reference model's features (or be refused with the reason), and every refusal is
one clear line. Key names of the foreign layouts are written out here as their
code defines them (facebookresearch/mae, moco-v3, dino, dinov2, bytedance/ibot,
microsoft/unilm beit, CAE, open-mmlab/mmpretrain)."""

import argparse
import copy
import importlib.util
import sys
from functools import partial

import pytest
import torch
from timm.models.beit import Beit
from timm.models.vision_transformer import VisionTransformer as TimmViT

from classification.models import ViTClassifier
from pretrain.checkpoints import (
    HeadCountError,
    UnknownCheckpointError,
    UnreadableCheckpointError,
    convert,
    load_state_dict_strictly,
    pooled_norm,
    save_backbone,
)
from pretrain.models.dense import DenseViT

from conftest import REPO, jitter

IMG = 48  # a 3x3 grid of 16-pixel patches
LN = partial(torch.nn.LayerNorm, eps=1e-6)


def small_vit(img_size: int = IMG, **kwargs) -> TimmViT:
    args = dict(img_size=img_size, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=0, norm_layer=LN)
    return jitter(TimmViT(**{**args, **kwargs}))


def small_beit(**kwargs) -> Beit:
    args = dict(img_size=IMG, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=0, init_values=0.1)
    return jitter(Beit(**{**args, **kwargs}))


def on_meta(model_class, **kwargs) -> dict:
    """A full-size state dict without memory: head counts depend on shapes only."""
    with torch.device("meta"):
        return model_class(**kwargs).state_dict()


def encoder_of(conversion, img_size: int | None = None) -> torch.nn.Module:
    backbone = conversion.backbone
    encoder = backbone.arch.build(img_size=img_size).eval()
    load_state_dict_strictly(encoder, backbone.state_dict, "converted")
    return encoder


def assert_same_features(conversion, reference: torch.nn.Module, img_size: int = IMG) -> None:
    """Tokens and the pooled feature of the converted encoder equal the reference's."""
    encoder = encoder_of(conversion, img_size)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        expected = reference.forward_features(x)
        tokens = encoder(x)
        torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=2e-5)
        if pooled_norm(encoder) is not None:
            torch.testing.assert_close(
                pooled_norm(encoder)(tokens[:, 1:].mean(dim=1)),
                reference.forward_head(expected, pre_logits=True),
                rtol=1e-4,
                atol=2e-5,
            )


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def without(state: dict, *prefixes: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


# ----------------------------------------------------------------- completeness


@pytest.fixture(scope="module")
def depth4_vit():
    return small_vit(depth=4)


@pytest.mark.parametrize(
    "key,new_shape,named",
    [
        ("blocks.3.attn.qkv.weight", None, r"missing \[blocks\.3\.attn\.qkv\.weight\]"),
        ("norm.weight", None, r"missing \[norm\.weight\]"),
        ("cls_token", None, r"missing \[cls_token\]"),
        ("blocks.2.norm1.bias", None, r"missing \[blocks\.2\.norm1\.bias\]"),
        ("patch_embed.proj.weight", None, r"missing \['patch_embed\.proj\.weight'\]"),
        ("pos_embed", None, r"no pos_embed"),
        ("blocks.1.mlp.fc1.weight", (200, 64), r"mis-shaped \[blocks\.1\.mlp\.fc1\.weight: file \(200, 64\)"),
        ("blocks.0.attn.proj.bias", (48,), r"mis-shaped \[blocks\.0\.attn\.proj\.bias: file \(48,\)"),
        ("pos_embed", (1, 16, 64), r"pos_embed has shape \(1, 16, 64\): not a class token plus a square grid"),
        ("pos_embed", (1, 10, 48), r"mis-shaped \[pos_embed: file \(1, 10, 48\) vs model \(1, 10, 64\)"),
    ],
)
def test_incomplete_or_misshaped_encoders_are_refused_naming_the_key(depth4_vit, key, new_shape, named):
    state = {**depth4_vit.state_dict(), "mask_token": torch.zeros(1, 1, 64)}  # MAE layout
    if new_shape is None:
        del state[key]
    else:
        state[key] = torch.zeros(new_shape)
    with pytest.raises(UnknownCheckpointError, match=named):
        convert({"model": state}, num_heads=4)


@pytest.fixture()
def converter(monkeypatch, capsys):
    """tools/convert_checkpoint.py's main() in this process: (exit status, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("convert_checkpoint_tool", REPO / "tools/convert_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def run(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["convert_checkpoint.py", *map(str, argv)])
        code = tool.main()
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_tool_writes_nothing_for_an_incomplete_encoder(depth4_vit, converter, tmp_path):
    state = depth4_vit.state_dict()
    del state["blocks.3.attn.qkv.weight"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    code, out, err = converter(tmp_path / "broken.pth", tmp_path / "out.safetensors", "--num-heads", "4")
    assert code == 2 and not out and err.count("\n") == 1 and "blocks.3.attn.qkv.weight" in err
    assert not (tmp_path / "out.safetensors").exists()


# ----------------------------------------------------------------- unreadable inputs


def _unreadable(kind: str, tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(4096)}}, good)
    data = good.read_bytes()
    if kind == "truncated zip .pth":
        path, content = tmp_path / "ckpt.pth", data[: len(data) // 2]
    elif kind == "truncated legacy .pth":
        torch.save({"w": torch.zeros(4096)}, good, _use_new_zipfile_serialization=False)
        legacy = good.read_bytes()
        path, content = tmp_path / "ckpt.pth", legacy[: len(legacy) // 2]
    elif kind == "truncated .safetensors":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(4096)}, str(good))
        full = good.read_bytes()
        path, content = tmp_path / "ckpt.safetensors", full[: len(full) // 2]
    elif kind == "text file":
        path, content = tmp_path / "ckpt.pth", b"epoch 10: loss 0.41, top1 81.2\n"
    elif kind == "LFS pointer":
        path = tmp_path / "ckpt.pth"
        content = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 345678901\n"
    elif kind == "a bare tensor":
        torch.save(torch.zeros(8), good)
        path, content = tmp_path / "ckpt.pth", good.read_bytes()
    else:  # empty
        path, content = tmp_path / "ckpt.pth", b""
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "kind,says",
    [
        ("truncated zip .pth", "truncated or damaged torch checkpoint"),
        ("truncated legacy .pth", "truncated or damaged torch checkpoint"),
        ("truncated .safetensors", "truncated or damaged safetensors file"),
        ("text file", "is not a checkpoint"),
        ("LFS pointer", "Git LFS pointer"),
        ("empty", "is empty"),
        ("a bare tensor", "holds a Tensor, not a checkpoint"),
    ],
)
def test_unreadable_inputs_get_one_line_and_exit_2(kind, says, converter, tmp_path):
    path = _unreadable(kind, tmp_path)
    for flags in ((), ("--trust-pickle",)):
        code, out, err = converter(path, tmp_path / "out.safetensors", *flags)
        assert code == 2 and not out, (kind, flags)
        assert err.count("\n") == 1 and err.startswith(f"error: {path}") and says in err, err
        assert "Traceback" not in err and "\x1b" not in err
    with pytest.raises(UnreadableCheckpointError, match=says):
        from pretrain.checkpoints import load_checkpoint_file

        load_checkpoint_file(path, trust_pickle=True)


def test_untrusted_pickle_refusal_is_in_the_projects_words(converter, tmp_path):
    path = tmp_path / "mae.pth"
    torch.save({"model": small_vit().state_dict(), "args": argparse.Namespace(model="x")}, path)
    code, _, err = converter(path, tmp_path / "out.safetensors")
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err
    assert "argparse.Namespace" in err and "--trust-pickle" in err and "Weights only load failed" not in err


def test_info_on_a_damaged_canonical_file_is_one_line(converter, tmp_path):
    path = _unreadable("truncated .safetensors", tmp_path)
    code, _, err = converter("--info", path)
    assert code == 2 and err.count("\n") == 1 and str(path) in err and "Traceback" not in err


# ----------------------------------------------------------------- BEiT final norm


@pytest.fixture(scope="module", params=["avg", "token"])
def beit_finetuned(request, tmp_path_factory):
    """BEiT's fine-tuning layout: per-block relative tables, a classifier head, and
    either mean pooling (fc_norm, no norm: BEiT's default) or the class token (norm)."""
    reference = small_beit(depth=4, num_classes=5, global_pool=request.param, use_rel_pos_bias=True)
    obj = {"model": dict(reference.state_dict()), "epoch": 29}
    conversion = convert(obj)
    path = tmp_path_factory.mktemp("beit") / "beit.safetensors"
    save_backbone(path, conversion.backbone)
    return request.param, reference, conversion, path


def test_beit_finetuned_layouts_map_their_final_norm_faithfully(beit_finetuned):
    pool, reference, conversion, _ = beit_finetuned
    arch = conversion.backbone.arch
    assert arch.final_norm == {"avg": "mean_pooled", "token": "tokens"}[pool]
    assert (arch.num_heads, arch.rel_pos_bias, arch.qkv_bias) == (4, "per_block", "qv")
    assert conversion.dropped == {"head.": 2}
    assert ("fc_norm.weight" in conversion.backbone.state_dict) == (pool == "avg")
    assert_same_features(conversion, reference)
    # the canonical keys are timm's: the state loads into the official model, head aside
    missing, unexpected = reference.load_state_dict(conversion.backbone.state_dict, strict=False)
    assert not unexpected and sorted(missing) == ["head.bias", "head.weight"]


def test_beit_finetuned_features_reach_the_classifier_and_dense_backbone(beit_finetuned):
    pool, reference, _, path = beit_finetuned
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        linear = ViTClassifier(5, dict(checkpoint=str(path), img_size=IMG), head="linear").eval()
        torch.testing.assert_close(linear.features(x), expected, rtol=1e-4, atol=2e-5)
        if pool == "avg":  # fine-tuning starts from the file's own norm of the mean patch token
            finetune = ViTClassifier(5, dict(checkpoint=str(path), img_size=IMG)).eval()
            torch.testing.assert_close(finetune.features(x), expected, rtol=1e-4, atol=2e-5)
        dense = DenseViT(str(path), img_size=IMG, out_indices=(0, 1, 2, 3), norm="BN", drop_path_rate=0.0).eval()
        taps = reference.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        for ours, theirs in zip(dense.tap(x), taps, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5)


# ----------------------------------------------------------------- CAE and head counts


def cae_layout(encoder_state: dict, **extra) -> dict:
    """CAE's pretraining checkpoint: the BEiT-style encoder under encoder., a
    regressor/decoder, the momentum teacher and the mask token beside it."""
    model = prefixed(encoder_state, "encoder.")
    model.update(
        {
            "mask_token": torch.zeros(1, 1, 8),
            "regressor_and_decoder.blocks.0.mlp.fc1.weight": torch.zeros(8, 8),
            "teacher_model.cls_token": torch.zeros(1, 1, 8),
        }
    )
    return {"model": model, **extra}


def test_cae_small_has_twelve_heads_and_the_official_features():
    """CAE builds ViT-S (and ViT-tiny) with 12 heads, not the standard 6 (3)."""
    reference = small_beit(
        img_size=32, embed_dim=384, depth=12, num_heads=12, use_abs_pos_emb=True, use_rel_pos_bias=False
    )
    for extra in ({}, {"args": argparse.Namespace(model="cae_small_patch16_224_8k_vocab"), "epoch": 299}):
        conversion = convert(cae_layout(reference.state_dict(), **extra))
        assert conversion.source_format == "cae" and conversion.backbone.arch.num_heads == 12
        assert conversion.dropped == {"mask_token": 1, "regressor_and_decoder": 1, "teacher_model": 1}
    assert "args.model='cae_small_patch16_224_8k_vocab'" in conversion.backbone.metadata["num_heads_from"]
    assert conversion.backbone.metadata["pretraining"] == {"method": "CAE", "epochs": 300}
    assert_same_features(conversion, reference, img_size=32)
    with pytest.raises(HeadCountError, match="--num-heads 6 contradicts"):
        convert(cae_layout(reference.state_dict()), num_heads=6)


@pytest.mark.parametrize("width,depth,heads", [(192, 12, 12), (768, 12, 12), (1024, 24, 16)])
def test_cae_sizes_take_heads_from_cae_code(width, depth, heads):
    state = on_meta(Beit, embed_dim=width, depth=depth, num_heads=heads, num_classes=0, use_abs_pos_emb=True)
    assert convert(cae_layout(state)).backbone.arch.num_heads == heads


def test_head_counts_are_recorded_or_refused_never_guessed_silently():
    vit_b = on_meta(TimmViT, embed_dim=768, depth=12, num_heads=12, num_classes=0)
    assert convert(vit_b).backbone.arch.num_heads == 12
    with pytest.raises(HeadCountError, match="--num-heads 16 contradicts"):
        convert(vit_b, num_heads=16)
    with pytest.raises(HeadCountError, match="names a 768-wide, 12-block ViT, but the weights are 384-wide"):
        vit_s = on_meta(TimmViT, embed_dim=384, depth=12, num_heads=6, num_classes=0)
        convert({"model": vit_s, "args": argparse.Namespace(model="mae_vit_base_patch16")})
    # a bare timm/MAE layout of ViT-S: timm's 6, said to be a convention; CAE / MoCo v3 exports need 12
    conversion = convert(vit_s)
    assert (
        conversion.backbone.arch.num_heads == 6 and "--num-heads 12" in conversion.backbone.metadata["num_heads_from"]
    )
    overridden = convert(vit_s, num_heads=12)
    assert overridden.backbone.arch.num_heads == 12 and "overriding" in overridden.backbone.metadata["num_heads_from"]
    with pytest.raises(HeadCountError, match="pass --num-heads"):
        convert(small_vit().state_dict())
    beit = small_beit(use_rel_pos_bias=True).state_dict()
    with pytest.raises(HeadCountError, match="relative position bias table, which gives 4"):
        convert({"model": beit}, num_heads=8)
    with pytest.raises(HeadCountError, match="does not divide"):
        convert(small_vit().state_dict(), num_heads=5)


# ----------------------------------------------------------------- MoCo v3, DINO, iBOT, DINOv2


def moco_v3_projection_head(prefix: str, width: int) -> dict:
    # MoCo v3 replaces the ViT head by a 3-layer MLP with BatchNorm (builder.py)
    return {
        f"{prefix}head.0.weight": torch.zeros(16, width),
        f"{prefix}head.1.weight": torch.ones(16),
        f"{prefix}head.1.running_mean": torch.zeros(16),
        f"{prefix}head.1.num_batches_tracked": torch.tensor(0),
        f"{prefix}head.6.weight": torch.zeros(8, 16),
    }


def moco_v3_layout(base: dict, momentum: dict, **extra) -> dict:
    width = base["cls_token"].shape[-1]
    state = {
        **prefixed(base, "module.base_encoder."),
        **moco_v3_projection_head("module.base_encoder.", width),
        **prefixed(momentum, "module.momentum_encoder."),
        **moco_v3_projection_head("module.momentum_encoder.", width),
        "module.predictor.0.weight": torch.zeros(16, 8),
    }
    return {"epoch": 300, "state_dict": state, "optimizer": {}, **extra}


def test_moco_v3_base_and_momentum_encoders():
    """main_moco.py's checkpoint: a fixed sin-cos position embedding (stored like any
    tensor), the projection MLP and predictor dropped, base encoder by default."""
    base = small_vit()
    momentum = jitter(copy.deepcopy(base), scale=0.01)
    obj = moco_v3_layout(base.state_dict(), momentum.state_dict())
    conversion = convert(obj, num_heads=4)
    assert conversion.source_format == "moco-v3" and conversion.backbone.metadata["select"] == "student"
    assert conversion.backbone.metadata["pretraining"] == {"method": "MoCo v3", "epochs": 300}
    assert conversion.dropped == {
        "base_encoder.head.": 5,
        "momentum_encoder": len(momentum.state_dict()) + 5,
        "predictor": 1,
    }
    assert_same_features(conversion, base)
    assert_same_features(convert(obj, "teacher", num_heads=4), momentum)


def test_moco_v3_vit_small_has_twelve_heads():
    vit_s = on_meta(TimmViT, embed_dim=384, depth=12, num_heads=12, num_classes=0)
    named = convert(moco_v3_layout(vit_s, vit_s, arch="vit_small"))
    assert named.backbone.arch.num_heads == 12 and named.backbone.metadata["num_heads_from"].startswith("arch=")
    assert convert(moco_v3_layout(vit_s, vit_s)).backbone.arch.num_heads == 12  # MoCo v3's own sizes
    with pytest.raises(HeadCountError, match="--num-heads 6 contradicts"):
        convert(moco_v3_layout(vit_s, vit_s), num_heads=6)
    conv_stem = moco_v3_layout({**vit_s, "patch_embed.proj.0.weight": torch.zeros(8, 3, 3, 3)}, vit_s)
    with pytest.raises(UnknownCheckpointError, match="convolutional stem"):
        convert(conv_stem)


def dino_layout(student: dict, teacher: dict, method: str = "dino", **extra) -> dict:
    """main_dino.py / iBOT's main_ibot.py checkpoint. DDP wraps the student only (a ViT
    teacher has no batch norm to synchronise); heads are projection MLPs."""
    width = teacher["cls_token"].shape[-1]
    head = {"head.mlp.0.weight": torch.zeros(8, width), "head.last_layer.weight_g": torch.ones(8, 1)}
    obj = {
        "student": {**prefixed(student, "module.backbone."), **prefixed(head, "module.")},
        "teacher": {**prefixed(teacher, "backbone."), **head},
        "epoch": 100,
        **extra,
    }
    if method == "ibot":
        obj["ibot_loss"] = {"center": torch.zeros(1, 8)}
        obj["student"]["module.backbone.masked_embed"] = torch.zeros(1, width)
        obj["teacher"]["backbone.masked_embed"] = torch.zeros(1, width)
    return obj


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_dino_and_ibot_take_the_teacher_by_default(method):
    teacher = small_vit()
    student = jitter(copy.deepcopy(teacher), scale=0.01)
    obj = dino_layout(student.state_dict(), teacher.state_dict(), method)
    conversion = convert(obj, num_heads=4)
    meta = conversion.backbone.metadata
    assert conversion.source_format == method and meta["select"] == "teacher"
    assert meta["pretraining"] == {"method": {"dino": "DINO", "ibot": "iBOT"}[method], "epochs": 100}
    assert conversion.dropped["teacher.head"] == 2 and conversion.dropped["student"] == len(obj["student"])
    assert_same_features(conversion, teacher)
    assert_same_features(convert(obj, "student", num_heads=4), student)
    vit_s = on_meta(TimmViT, embed_dim=384, depth=12, num_heads=6, num_classes=0)
    named = convert(dino_layout(vit_s, vit_s, method, args=argparse.Namespace(arch="vit_small", patch_size=16)))
    assert named.backbone.arch.num_heads == 6 and named.backbone.metadata["num_heads_from"].startswith("args.arch=")


def dinov2_vit(**kwargs) -> TimmViT:
    """timm's DINOv2 ViT (vit_*_patch14_dinov2: patch 14, LayerScale) at a 4x4 grid."""
    return small_vit(img_size=56, patch_size=14, init_values=1e-5, **kwargs)


def chunked(backbone: dict, chunk: int) -> dict:
    """DINOv2's training layout: blocks.<chunk>.<global index> (block_chunks > 0)."""
    out = {}
    for key, value in backbone.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{int(index) // chunk}.{index}.{rest}"
        out[key] = value
    return out


def test_dinov2_release_and_training_checkpoint():
    reference = dinov2_vit(depth=4)
    release = {**reference.state_dict(), "mask_token": torch.zeros(1, 64)}
    conversion = convert(release, num_heads=4)
    arch = conversion.backbone.arch
    assert conversion.source_format == "dinov2" and conversion.dropped == {"mask_token": 1}
    assert (arch.patch_size, arch.layer_scale, arch.grid) == (14, True, (4, 4))
    assert_same_features(conversion, reference, img_size=56)
    # the trainer's teacher checkpoint: chunked blocks, the mask token, both heads
    backbone = {**chunked(reference.state_dict(), chunk=2), "mask_token": torch.zeros(1, 64)}
    teacher = {**prefixed(backbone, "backbone."), "dino_head.mlp.0.weight": torch.zeros(8, 64)}
    teacher["ibot_head.mlp.0.weight"] = torch.zeros(8, 64)
    conversion = convert({"teacher": teacher}, num_heads=4)
    assert conversion.source_format == "dinov2" and conversion.backbone.metadata["select"] == "teacher"
    assert conversion.dropped == {"teacher.backbone.mask_token": 1, "teacher.dino_head": 1, "teacher.ibot_head": 1}
    assert_same_features(conversion, reference, img_size=56)
    # DINOv2's own sizes: ViT-S/14 has 6 heads
    vit_s = {**on_meta(TimmViT, patch_size=14, embed_dim=384, depth=12, num_heads=6, init_values=1e-5, num_classes=0)}
    assert convert({**vit_s, "mask_token": torch.zeros(1, 384)}).backbone.arch.num_heads == 6


def test_register_tokens_and_swiglu_are_refused():
    registers = small_vit(patch_size=16, reg_tokens=4, init_values=1e-5).state_dict()
    assert "reg_token" in registers  # timm's name; DINOv2's is register_tokens
    with pytest.raises(UnknownCheckpointError, match="4 register tokens"):
        convert(registers, num_heads=4)
    release = {("register_tokens" if k == "reg_token" else k): v for k, v in registers.items()}
    with pytest.raises(UnknownCheckpointError, match="register_tokens: a ViT with 4 register tokens"):
        convert({**release, "mask_token": torch.zeros(1, 64)}, num_heads=4)
    swiglu = {**small_vit(init_values=1e-5).state_dict(), "mask_token": torch.zeros(1, 64)}
    swiglu["blocks.0.mlp.w12.weight"] = swiglu.pop("blocks.0.mlp.fc1.weight")
    with pytest.raises(UnknownCheckpointError, match="SwiGLU"):
        convert(swiglu, num_heads=4)


# ----------------------------------------------------------------- official SdAE, single-GPU run


def test_official_sdae_from_a_single_gpu_run_has_no_teacher():
    student = small_vit()
    saved = {**student.state_dict(), "decoder_embed.weight": torch.zeros(8, 64), "mask_token": torch.zeros(1, 1, 8)}
    obj = {"model": saved, "model_teacher": dict(saved), "epoch": 19}  # main_pretrain.py, no DDP
    with pytest.raises(UnknownCheckpointError, match="single-GPU run of the official SdAE code"):
        convert(obj, "teacher", num_heads=4)
    conversion = convert(obj, num_heads=4)
    assert conversion.dropped["model_teacher (copy of the student)"] == len(saved)
    assert_same_features(conversion, student)


# ----------------------------------------------------------------- mmpretrain / mmselfsup


def mmpretrain_backbone(state: dict) -> dict:
    """A timm ViT / Beit state dict in mmpretrain's VisionTransformer / BEiTViT names
    (mmpretrain/models/backbones/vision_transformer.py, beit.py; mmcv FFN / PatchEmbed)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("patch_embed.proj."):
            key = "patch_embed.projection." + parts[-1]
        elif key.startswith("blocks."):
            i, rest = parts[1], ".".join(parts[2:])
            rest = {
                "norm1.weight": "ln1.weight",
                "norm1.bias": "ln1.bias",
                "norm2.weight": "ln2.weight",
                "norm2.bias": "ln2.bias",
                "mlp.fc1.weight": "ffn.layers.0.0.weight",
                "mlp.fc1.bias": "ffn.layers.0.0.bias",
                "mlp.fc2.weight": "ffn.layers.1.weight",
                "mlp.fc2.bias": "ffn.layers.1.bias",
                "ls1.gamma": "attn.gamma1.weight",
                "ls2.gamma": "ffn.gamma2.weight",
            }.get(rest, rest)  # attn.qkv/proj/q_bias/v_bias/relative_position_bias_table, gamma_1/2 keep their names
            key = f"layers.{i}.{rest}"
        elif key.startswith(("norm.", "fc_norm.")):
            key = {"norm": "ln1", "fc_norm": "ln2"}[parts[0]] + "." + parts[1]
        out["backbone." + key] = value
    return out


def mmpretrain_cfg(model_type: str, backbone: str) -> str:
    return (
        f"model = dict(\n    type='{model_type}',\n    backbone=dict(\n{backbone}\n    ),\n    neck=dict(type='X'))\n"
    )


@pytest.mark.parametrize("variant", ["MAE", "BEiT", "CAE", "MoCoV3", "LayerScale"])
def test_mmpretrain_layouts(variant):
    custom = "        arch=dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=256),"
    extras = {"neck.decoder_embed.weight": torch.zeros(8, 64), "head.fc.weight": torch.zeros(5, 64)}
    if variant == "MAE":
        reference = small_vit()
        cfg = mmpretrain_cfg("MAE", f"        type='MAEViT',\n{custom}\n        patch_size=16,")
    elif variant == "BEiT":  # fine-tuned: relative tables per block, ln2 on the mean patch token
        reference = small_beit(use_rel_pos_bias=True, global_pool="avg")
        cfg = mmpretrain_cfg("ImageClassifier", f"        type='BEiTViT',\n{custom}\n        out_type='avg_featmap',")
        extras = {"target_generator.encoder.0.weight": torch.zeros(8, 8)}
    elif variant == "CAE":
        reference = small_beit(use_abs_pos_emb=True, use_rel_pos_bias=False)
        cfg = mmpretrain_cfg("CAE", f"        type='CAEPretrainViT',\n{custom}")
        extras = {**extras, **prefixed(mmpretrain_backbone(reference.state_dict()), "teacher.")}
    elif variant == "MoCoV3":
        reference = small_vit()
        cfg = mmpretrain_cfg("MoCoV3", f"        type='MoCoV3ViT',\n{custom}\n        stop_grad_conv1=True,")
        extras = {
            **{
                k.replace("backbone.", "momentum_encoder.module.0.", 1): v
                for k, v in mmpretrain_backbone(reference.state_dict()).items()
            },
            "momentum_encoder.steps": torch.tensor(1),
        }
    else:  # layer_scale_init_value > 0: LayerScale modules attn.gamma1 / ffn.gamma2
        reference = small_vit(init_values=0.1)
        cfg = mmpretrain_cfg("ImageClassifier", f"        type='VisionTransformer',\n{custom}")
    state = {**mmpretrain_backbone(reference.state_dict()), **extras}
    obj = {"meta": {"epoch": 100, "cfg": cfg}, "state_dict": state}
    conversion = convert(obj)
    meta = conversion.backbone.metadata
    assert conversion.source_format == "mmpretrain" and meta["pretraining"]["epochs"] == 100
    assert meta["pretraining"]["method"] == {"BEiT": "ImageClassifier", "LayerScale": "ImageClassifier"}.get(
        variant, variant
    )
    assert conversion.backbone.arch.num_heads == 4
    assert meta["num_heads_from"] == (
        "the relative position bias table" if variant == "BEiT" else "meta.cfg backbone num_heads=4"
    )
    assert set(conversion.dropped) == {k.split(".")[0] for k in extras}
    assert_same_features(conversion, reference)


def test_mmpretrain_heads_follow_its_arch_names():
    vit_s = mmpretrain_backbone(on_meta(TimmViT, embed_dim=384, depth=12, num_heads=6, num_classes=0))
    with pytest.raises(HeadCountError, match="pass --num-heads"):  # deit-s has 6 heads, mocov3-small 12
        convert({"state_dict": vit_s})
    assert (
        convert({"state_dict": vit_s, "meta": {"cfg": mmpretrain_cfg("X", "arch='deit-s',")}}).backbone.arch.num_heads
        == 6
    )
    moco = {**vit_s, "momentum_encoder.steps": torch.tensor(1)}
    assert convert({"state_dict": moco}).backbone.arch.num_heads == 12
    both_norms = mmpretrain_backbone(small_vit().state_dict())
    both_norms.update({"backbone.ln2.weight": torch.ones(64), "backbone.ln2.bias": torch.zeros(64)})
    with pytest.raises(UnknownCheckpointError, match="both a final norm on every token"):
        convert({"state_dict": both_norms}, num_heads=4)
    clip_style = {**mmpretrain_backbone(small_vit().state_dict()), "backbone.pre_norm.weight": torch.ones(64)}
    with pytest.raises(UnknownCheckpointError, match="pre_norm"):
        convert({"state_dict": clip_style}, num_heads=4)
