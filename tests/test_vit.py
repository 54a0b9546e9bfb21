import pytest
import timm
import torch

from pretrain.models import VIT_ARCHS, build_vit, vit_base_patch16, vit_huge_patch14

from conftest import timm_vit_like


def test_features_match_timm_vit():
    """Same weights in timm's own ViT give the same tokens: our encoder is a timm ViT."""
    torch.manual_seed(0)
    ours = build_vit("tiny", img_size=64, depth=3).eval()
    ref = timm_vit_like(ours)  # strict load: identical parameter names and shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "arch,timm_name",
    [
        ("tiny", "vit_tiny_patch16_224"),
        ("small", "vit_small_patch16_224"),
        ("base", "vit_base_patch16_224"),
        ("large", "vit_large_patch16_224"),
        ("huge", "vit_huge_patch14_224"),
    ],
)
def test_sizes_match_timm(arch, timm_name):
    with torch.device("meta"):
        ours = build_vit(arch)
        ref = timm.create_model(timm_name, pretrained=False, num_classes=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert ours.patch_size == VIT_ARCHS[arch]["patch_size"]


def test_factories_and_drop_path():
    with torch.device("meta"):
        assert vit_huge_patch14().patch_size == 14
        model = vit_base_patch16(drop_path_rate=0.25)
    rates = [block.drop_path1.drop_prob for block in model.blocks[1:]]
    assert rates[-1] == pytest.approx(0.25) and rates == sorted(rates)


def test_sincos_pos_embed_is_fixed_and_learned_is_trainable():
    assert not build_vit("tiny", img_size=32, depth=1).pos_embed.requires_grad
    assert build_vit("tiny", img_size=32, depth=1, pos_embed="learned").pos_embed.requires_grad
    with pytest.raises(ValueError, match="unknown ViT arch"):
        build_vit("gigantic")
