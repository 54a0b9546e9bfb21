"""The dense ViT backbone (pyramid for UperNet / FPN), against mmseg's MAE backbone and timm."""

from functools import partial

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from pretrain.checkpoints import BackboneKeyError, convert, save_backbone
from pretrain.models import build_vit
from pretrain.models.dense import DenseViT

from conftest import jitter

TINY = dict(patch_size=16, embed_dim=192, depth=4, num_heads=3, grid=(4, 4))
TAPS = (0, 1, 2, 3)  # depth 4: every block feeds the pyramid


@pytest.fixture(scope="module")
def mae_file(tmp_path_factory):
    """A canonical file of a depth-4 MAE-style ViT (full qkv bias, no layer scale,
    no relative bias), with non-trivial weights."""
    vit = build_vit("tiny", img_size=64, depth=4)
    jitter(vit)
    path = tmp_path_factory.mktemp("dense") / "mae.safetensors"
    save_backbone(path, convert(vit.state_dict(), num_heads=3).backbone)
    return path, vit


def test_pyramid_strides_and_channels():
    model = DenseViT(arch=TINY, img_size=128, out_indices=TAPS, norm="BN").eval()
    outs = model(torch.randn(2, 3, 128, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 192, 32, 32), (2, 192, 16, 16), (2, 192, 8, 8), (2, 192, 4, 4)]


def test_non_square_inputs_interpolate_the_absolute_pos_embed():
    model = DenseViT(
        arch=TINY, img_size=64, rel_pos_bias="none", layer_scale_init=0.1, out_indices=TAPS, norm="BN"
    ).eval()
    outs = model(torch.randn(1, 3, 96, 160))
    assert [tuple(o.shape[-2:]) for o in outs] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 100, 160))
    with pytest.raises(ValueError, match="relative position bias is built for"):
        DenseViT(arch=TINY, img_size=64, out_indices=TAPS, norm="BN")(torch.randn(1, 3, 96, 96))


def test_added_relative_bias_and_layer_scale_start_as_identity(mae_file):
    """Zero relative tables, gamma 1 and dropping the key bias leave the MAE
    encoder's block outputs unchanged (timm's ViT as the reference)."""
    path, vit = mae_file
    model = DenseViT(str(path), img_size=64, out_indices=TAPS, norm="BN").eval()
    ref = TimmViT(
        img_size=64,
        patch_size=16,
        embed_dim=192,
        depth=4,
        num_heads=3,
        num_classes=0,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    ref.load_state_dict(vit.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cls = (ref.cls_token + ref.pos_embed[:, :1]).expand(2, -1, -1)
        tokens = torch.cat([cls, ref.patch_embed(x) + ref.pos_embed[:, 1:]], 1)
        expected = []
        for block in ref.blocks:
            tokens = block(tokens)
            expected.append(tokens[:, 1:].transpose(1, 2).reshape(2, 192, 4, 4))
        for ours, theirs in zip(model.tap(x), expected, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def to_mmseg(state: dict) -> dict:
    """Our (timm Beit) names -> mmseg's BEiT/MAE names (its beit2mmseg mapping)."""
    out = {}
    for key, value in state.items():
        key = key.replace("patch_embed.proj.", "patch_embed.projection.").replace("blocks.", "layers.")
        key = key.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
        key = key.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
        if key.startswith("norm."):
            continue  # final norm: not used by the dense recipe
        out[key] = value
    return out


def test_features_match_mmseg_mae_backbone(mae_file):
    """mmseg's own MAE backbone (full qkv bias, relative tables, layer scale) with the
    same, jittered weights gives the same feature maps."""
    from mmseg.models.backbones import MAE

    path, _ = mae_file
    ours = DenseViT(str(path), img_size=64, out_indices=TAPS, norm="BN").eval()
    jitter(ours.encoder, 0.02)  # non-zero relative tables, gamma != 1, non-zero biases
    state = ours.encoder.state_dict()
    for i in range(4):  # mmseg keeps a full qkv bias: give it a random key part, which must not matter
        q, v = state.pop(f"blocks.{i}.attn.q_bias"), state.pop(f"blocks.{i}.attn.v_bias")
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, torch.randn_like(q), v])
    theirs = MAE(
        img_size=64,
        patch_size=16,
        embed_dims=192,
        num_layers=4,
        num_heads=3,
        out_indices=[0, 1, 2, 3],
        init_values=1.0,
        norm_cfg=dict(type="LN", eps=1e-6),
    )
    missing, unexpected = theirs.load_state_dict(to_mmseg(state), strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing)
    theirs.eval()  # mmseg's train() returns None: no chaining
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours.tap(x), theirs(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_loading_is_strict_but_for_the_documented_additions(mae_file, tmp_path):
    _, vit = mae_file
    state = vit.state_dict()
    del state["blocks.2.mlp.fc1.weight"]
    broken = tmp_path / "broken.safetensors"
    backbone = convert(vit.state_dict(), num_heads=3).backbone
    backbone.state_dict = state
    save_backbone(broken, backbone)
    with pytest.raises(BackboneKeyError, match=r"missing keys \['blocks\.2\.mlp\.fc1\.weight'\]"):
        DenseViT(str(broken), img_size=64, out_indices=TAPS, norm="BN")


def test_beit_shared_table_goes_to_every_block_and_is_resized(tmp_path):
    from timm.models.beit import Beit

    beit = Beit(
        img_size=64,
        patch_size=16,
        embed_dim=192,
        depth=4,
        num_heads=3,
        num_classes=0,
        global_pool="token",
        init_values=0.1,
        use_abs_pos_emb=False,
        use_shared_rel_pos_bias=True,
    )
    jitter(beit)
    path = tmp_path / "beit.safetensors"
    save_backbone(path, convert({"model": beit.state_dict()}).backbone)
    same_grid = DenseViT(str(path), img_size=64, out_indices=TAPS, norm="BN")
    table = beit.rel_pos_bias.relative_position_bias_table
    for block in same_grid.encoder.blocks:
        torch.testing.assert_close(block.attn.relative_position_bias_table, table)
    larger = DenseViT(str(path), img_size=128, out_indices=TAPS, norm="BN")
    assert larger.encoder.blocks[0].attn.relative_position_bias_table.shape == ((2 * 8 - 1) ** 2 + 3, 3)
    with pytest.raises(ValueError, match="relative position"):
        DenseViT(str(path), img_size=64, rel_pos_bias="none", out_indices=TAPS, norm="BN")


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = DenseViT(arch=TINY, img_size=64, rel_pos_bias="none", out_indices=TAPS, norm="BN", drop_path_rate=0.0)
    cp = DenseViT(
        arch=TINY, img_size=64, rel_pos_bias="none", out_indices=TAPS, norm="BN", drop_path_rate=0.0, with_cp=True
    )
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    for model in (plain, cp):
        sum(o.sum() for o in model(x)).backward()
    for (name, a), b in zip(plain.named_parameters(), cp.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_cae_style_encoder_takes_non_square_inputs_without_relative_bias():
    """q/v bias and layer scale (BEiT blocks) but no relative bias: the detection setting for CAE files."""
    cae = dict(TINY, qkv_bias="qv", layer_scale=True)
    model = DenseViT(arch=cae, img_size=64, rel_pos_bias="none", out_indices=TAPS, norm="BN").eval()
    assert model.encoder.beit_blocks
    outs = model(torch.randn(1, 3, 64, 112))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 28), (8, 14), (4, 7), (2, 3)]


def dense_loss_and_grads(model: DenseViT, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    weights = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=weights)).sum() for o in model(x))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rel_pos_bias,cpu_kernel", [("per_block", "math"), ("none", "flash_cpu")])
def test_training_attention_equals_the_explicit_form(rel_pos_bias, cpu_kernel):
    """SDPA in training, with the learnable per-block relative bias as its additive mask
    (ADE20K) or without (COCO), against timm's explicit softmax: same outputs and
    gradients, the relative tables' included. Which kernel ran is recorded: on the CPU
    torch's fused kernel takes no gradient for the bias, so the biased case runs the
    math path here; on CUDA it takes the memory-efficient kernel (tests/test_gpu.py)."""
    from pretrain.models.attention import explicit_attention, sdpa_kernels

    torch.manual_seed(0)
    model = DenseViT(arch=TINY, img_size=64, rel_pos_bias=rel_pos_bias, out_indices=TAPS, norm="BN", drop_path_rate=0)
    jitter(model).train()  # non-zero relative tables; BN in training mode
    x = torch.randn(2, 3, 64, 64)
    assert sdpa_kernels(lambda: dense_loss_and_grads(model, x)) == {cpu_kernel: 4}
    loss, grads = dense_loss_and_grads(model, x)
    with explicit_attention(model):
        explicit_loss, explicit_grads = dense_loss_and_grads(model, x)
    torch.testing.assert_close(loss, explicit_loss, rtol=1e-5, atol=1e-4)
    assert grads.keys() == explicit_grads.keys()
    if rel_pos_bias == "per_block":
        assert all(f"encoder.blocks.{i}.attn.relative_position_bias_table" in grads for i in range(4))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, explicit_grads[name], rtol=1e-4, atol=1e-4, msg=name)
