"""Canonical backbone files and the converter, checked against timm's own models."""

import argparse
import json
from functools import partial

import pytest
import torch
from timm.models.beit import Beit
from timm.models.vision_transformer import VisionTransformer as TimmViT

from pretrain.checkpoints import (
    BackboneKeyError,
    NotCanonicalError,
    UnknownCheckpointError,
    UntrustedPickleError,
    convert,
    load_backbone_into,
    load_checkpoint_file,
    read_backbone,
    save_backbone,
)
from pretrain.models.pos_embed import resize_pos_embed

from conftest import REPO, jitter, run_tool

IMG = 64


def timm_vit() -> TimmViT:
    return jitter(
        TimmViT(
            img_size=IMG,
            patch_size=16,
            embed_dim=192,
            depth=12,
            num_heads=3,
            num_classes=10,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        )
    )


def timm_beit(**kwargs) -> Beit:
    return jitter(
        Beit(
            img_size=IMG,
            patch_size=16,
            embed_dim=192,
            depth=2,
            num_heads=3,
            num_classes=0,
            global_pool="token",
            init_values=0.1,
            **kwargs,
        )
    )


def mae_decoder_keys() -> dict:
    return {
        "mask_token": torch.zeros(1, 1, 64),
        "decoder_embed.weight": torch.randn(64, 192),
        "decoder_pred.weight": torch.randn(768, 64),
    }


def encoder_matches(conversion, reference: torch.nn.Module, tmp_path) -> None:
    path = tmp_path / "backbone.safetensors"
    save_backbone(path, conversion.backbone)
    backbone = read_backbone(path)
    ours = backbone.arch.build().eval()
    load_backbone_into(ours, path)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        expected = reference.forward_features(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)
        # the canonical keys are timm's: the file itself loads into the timm model
        missing, unexpected = reference.load_state_dict(backbone.state_dict, strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing)
        torch.testing.assert_close(reference.forward_features(x), expected)


def encoder_state(model: torch.nn.Module, drop=("head.",)) -> dict:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}


def test_official_mae_layout_needs_trust_then_converts(tmp_path):
    ref = timm_vit()
    path = tmp_path / "mae_pretrain.pth"
    torch.save(
        {
            "model": {**encoder_state(ref), **mae_decoder_keys()},
            "epoch": 799,
            "args": argparse.Namespace(model="mae_vit_tiny_patch16"),
        },
        path,
    )
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        load_checkpoint_file(path)
    conversion = convert(load_checkpoint_file(path, trust_pickle=True))
    assert conversion.source_format == "official-mae"
    assert conversion.backbone.metadata["pretraining"] == {"method": "MAE", "epochs": 800}
    assert conversion.dropped == {"decoder_": 2, "mask_token": 1}
    assert conversion.backbone.metadata["num_heads_from"] == "args.model='mae_vit_tiny_patch16' (" + (
        "timm / MAE / DeiT / DINO / this project sizes)"
    )
    encoder_matches(conversion, ref, tmp_path)


def test_official_sdae_student_and_teacher(tmp_path):
    student, teacher = timm_vit(), jitter(timm_vit())
    obj = {
        "model": {**encoder_state(student), **mae_decoder_keys()},
        "model_teacher": teacher.state_dict(),
        "epoch": 299,
    }  # the teacher keeps its classifier head
    assert convert(obj).source_format == "official-sdae"
    encoder_matches(convert(obj, "student"), student, tmp_path)
    conversion = convert(obj, "teacher")
    assert conversion.dropped == {"model_teacher.head.": 2}
    encoder_matches(conversion, teacher, tmp_path)


def test_this_projects_checkpoint(tmp_path):
    from pretrain.models import SdAE

    model = SdAE(arch="tiny", img_size=IMG, decoder=dict(embed_dim=32, depth=1, num_heads=2))
    jitter(model)
    state = {f"sdae.{k}": v for k, v in model.state_dict().items()}
    obj = {"state_dict": state, "meta": {"epoch": 3}}
    for select in ("student", "teacher"):
        conversion = convert(obj, select)
        assert conversion.backbone.metadata["pretraining"] == {"method": "SdAE", "epochs": 3}
        reference = TimmViT(
            img_size=IMG,
            patch_size=16,
            embed_dim=192,
            depth=12,
            num_heads=3,
            num_classes=0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ).eval()
        reference.load_state_dict(getattr(model, select).state_dict())
        encoder_matches(conversion, reference, tmp_path)
    mae = {"state_dict": {k: v for k, v in state.items() if not k.startswith("sdae.teacher.")}}
    assert convert(mae).backbone.metadata["pretraining"]["method"] == "MAE"
    with pytest.raises(ValueError, match="no teacher"):
        convert(mae, "teacher")


@pytest.mark.parametrize("variant", ["shared", "per_block"])
def test_beit_layout(variant, tmp_path):
    ref = timm_beit(
        use_abs_pos_emb=False, use_shared_rel_pos_bias=variant == "shared", use_rel_pos_bias=variant == "per_block"
    )
    state = dict(ref.state_dict())
    # official BEiT files also hold the index buffers, the mask token and the MIM head
    index = "rel_pos_bias.relative_position_index" if variant == "shared" else "blocks.0.attn.relative_position_index"
    state[index] = torch.zeros(17, 17, dtype=torch.long)
    state.update({"mask_token": torch.zeros(1, 1, 192), "lm_head.weight": torch.randn(8192, 192)})
    conversion = convert({"model": state})
    arch = conversion.backbone.arch
    assert conversion.source_format == "beit"
    assert (arch.qkv_bias, arch.layer_scale, arch.rel_pos_bias, arch.abs_pos_embed) == ("qv", True, variant, False)
    assert (arch.num_heads, arch.grid) == (3, (4, 4))
    encoder_matches(conversion, ref, tmp_path)


def test_cae_layout(tmp_path):
    ref = timm_beit(use_abs_pos_emb=True)
    model = {f"encoder.{k}": v for k, v in ref.state_dict().items()}
    model.update(
        {
            "mask_token": torch.zeros(1, 1, 192),
            "regressor_and_decoder.blocks.0.mlp.fc1.weight": torch.randn(8, 8),
            "teacher_model.cls_token": torch.zeros(1, 1, 192),
        }
    )
    conversion = convert({"model": model}, num_heads=3)
    assert conversion.source_format == "cae"
    assert conversion.dropped == {"mask_token": 1, "regressor_and_decoder": 1, "teacher_model": 1}
    assert conversion.backbone.arch.qkv_bias == "qv" and conversion.backbone.arch.abs_pos_embed
    encoder_matches(conversion, ref, tmp_path)


def test_timm_state_dict_and_safetensors(tmp_path):
    ref = timm_vit()
    conversion = convert(ref.state_dict())
    assert conversion.source_format == "timm" and conversion.dropped == {"head.": 2}
    encoder_matches(conversion, ref, tmp_path)
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(tmp_path / "timm.safetensors"))
    assert convert(load_checkpoint_file(tmp_path / "timm.safetensors")).source_format == "timm"


def test_unmapped_and_unknown_keys_are_named():
    state = {**encoder_state(timm_vit()), "adapter.weight": torch.zeros(3)}
    with pytest.raises(UnknownCheckpointError, match=r"adapter\.weight"):
        convert({"model": state})
    with pytest.raises(UnknownCheckpointError, match="top-level keys"):
        convert({"weights": {}})
    with pytest.raises(ValueError, match="no EMA teacher"):
        convert({"model": encoder_state(timm_vit())}, "teacher")


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "b.safetensors"
    save_backbone(path, convert(timm_vit().state_dict()).backbone)
    shallow = read_backbone(path).arch.build()
    del shallow.blocks[11]
    with pytest.raises(BackboneKeyError, match=r"unexpected keys \['blocks\.11\.attn\.proj\.bias'"):
        load_backbone_into(shallow, path)
    arch = read_backbone(path).arch
    no_bias = type(arch)(**{**arch.__dict__, "qkv_bias": "none"}).build()
    with pytest.raises(BackboneKeyError, match=r"blocks\.0\.attn\.qkv\.bias"):
        load_backbone_into(no_bias, path)


def test_canonical_file_round_trip_and_integrity(tmp_path):
    conversion = convert(timm_vit().state_dict())
    path = tmp_path / "b.safetensors"
    written = save_backbone(path, conversion.backbone)
    back = read_backbone(path)
    assert back.arch == conversion.backbone.arch and back.metadata == written
    assert all(torch.equal(back.state_dict[k], v) for k, v in conversion.backbone.state_dict.items())
    with pytest.raises(NotCanonicalError, match="convert it first"):
        read_backbone(tmp_path / "model.pth")
    from safetensors.torch import save_file

    tampered = dict(back.state_dict)
    tampered["norm.bias"] = tampered["norm.bias"] + 1
    save_file(tampered, str(tmp_path / "t.safetensors"), metadata={"sdae_suite": json.dumps(written)})
    with pytest.raises(NotCanonicalError, match="sha256"):
        read_backbone(tmp_path / "t.safetensors")


def test_position_embedding_resize():
    pos = torch.randn(1, 1 + 16, 8)
    assert resize_pos_embed(pos, (4, 4)) is pos
    big = resize_pos_embed(pos, (8, 6))
    assert big.shape == (1, 1 + 48, 8) and torch.equal(big[:, 0], pos[:, 0])
    flat = torch.ones(1, 1 + 16, 8)
    torch.testing.assert_close(resize_pos_embed(flat, (7, 7)), torch.ones(1, 50, 8))
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.zeros(1, 1 + 12, 8), (4, 4))


def test_loading_resizes_pos_embed_to_the_model(tmp_path):
    path = tmp_path / "b.safetensors"
    save_backbone(path, convert(timm_vit().state_dict()).backbone)
    model = read_backbone(path).arch.build(img_size=96)  # 6x6 grid instead of 4x4
    load_backbone_into(model, path)
    expected = resize_pos_embed(read_backbone(path).state_dict["pos_embed"], (6, 6))
    torch.testing.assert_close(model.pos_embed.detach(), expected)


def test_convert_tool(tmp_path):
    path = tmp_path / "mae.pth"
    torch.save(
        {"model": {**encoder_state(timm_vit()), **mae_decoder_keys()}, "args": argparse.Namespace(lr=1e-3)}, path
    )
    out = tmp_path / "mae.safetensors"
    refused = run_tool(str(REPO / "tools/convert_checkpoint.py"), str(path), str(out))
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr and not out.exists()
    done = run_tool(
        str(REPO / "tools/convert_checkpoint.py"), str(path), str(out), "--trust-pickle", "--img-size", "96"
    )
    assert done.returncode == 0, done.stderr
    assert "format: official-mae" in done.stdout and "decoder_ (2)" in done.stdout
    backbone = read_backbone(out)
    assert backbone.arch.grid == (6, 6) and backbone.state_dict["pos_embed"].shape == (1, 37, 192)
    assert len(backbone.metadata["source"]["sha256"]) == 64
