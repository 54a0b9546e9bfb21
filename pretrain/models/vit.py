"""The one ViT encoder of the suite: SdAE student, EMA teacher and (later) the
classification and dense backbones.

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.{i}``, ``norm``), so a state dict moves
between the two without renaming.
"""

from functools import partial
from typing import Literal

import torch
from timm.layers import PatchEmbed
from timm.models import beit
from timm.models.vision_transformer import Block
from torch import nn

from .pos_embed import sincos_2d

# width, depth, heads, patch size (MAE / ViT paper sizes; "micro" is this
# project's size for 32 px images in the small-scale reproduction, "micro-p8" the
# same encoder with 8 px patches for the 64-128 px images of the real-image mini suite)
VIT_ARCHS: dict[str, dict[str, int]] = {
    "micro": dict(embed_dim=128, depth=4, num_heads=4, patch_size=4),
    "micro-p8": dict(embed_dim=128, depth=4, num_heads=4, patch_size=8),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, patch_size=16),
    "small": dict(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "base": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}


QkvBias = Literal["qkv", "qv", "none"]
RelPosBias = Literal["none", "shared", "per_block"]
PosEmbed = Literal["sincos", "learned", "none"]


class VisionTransformer(nn.Module):
    """ViT encoder with a class token and an optional absolute 2-D position embedding.

    ``pos_embed="sincos"`` gives MAE's fixed sine-cosine table (not trained);
    ``"learned"`` a trainable, randomly initialised one (the published SdAE
    teacher is built that way and only ever changes through the EMA); ``"none"``
    none at all (BEiT, which relies on relative position bias).

    The BEiT / CAE variants - bias on query and value only (``qkv_bias="qv"``),
    relative position bias shared by all blocks or per block - are built from
    timm's BEiT blocks and use timm ``Beit`` parameter names (``attn.q_bias``,
    ``gamma_1``, ``rel_pos_bias.*``); plain models use timm ``VisionTransformer``
    blocks and names (layer scale: ``ls1.gamma``). ``img_size`` sets the grid of
    the position embedding and relative position tables.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: QkvBias = "qkv",
        drop_path_rate: float = 0.0,
        pos_embed: PosEmbed = "sincos",
        layer_scale: float | None = None,
        rel_pos_bias: RelPosBias = "none",
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("pos_embed", pos_embed, ("sincos", "learned", "none")),
            ("qkv_bias", qkv_bias, ("qkv", "qv", "none")),
            ("rel_pos_bias", rel_pos_bias, ("none", "shared", "per_block")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.beit_blocks = qkv_bias == "qv" or rel_pos_bias != "none"
        if self.beit_blocks and qkv_bias == "qkv":
            raise ValueError(
                "relative position bias is built on BEiT blocks, which have no key bias: use "
                "qkv_bias='qv' (a key bias never changes attention, so dropping it is exact)"
            )
        self.embed_dim = embed_dim
        self.pos_embed_kind = pos_embed
        # dynamic_img_size: accept any input that is a multiple of the patch size (dense tasks)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=not dynamic_img_size)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = (
            None
            if pos_embed == "none"
            else nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=pos_embed == "learned")
        )
        self.rel_pos_bias = beit.RelativePositionBias(self.grid_size, num_heads) if rel_pos_bias == "shared" else None
        # stochastic depth grows linearly with depth (the ViT/MAE rule)
        drop_path = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        if self.beit_blocks:
            window = self.grid_size if rel_pos_bias == "per_block" else None
            blocks = (
                beit.Block(
                    embed_dim,
                    num_heads,
                    qkv_bias=qkv_bias == "qv",
                    mlp_ratio=mlp_ratio,
                    drop_path=dp,
                    init_values=layer_scale,
                    window_size=window,
                    norm_layer=norm_layer,
                )
                for dp in drop_path
            )
        else:
            blocks = (
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias=qkv_bias == "qkv",
                    init_values=layer_scale,
                    drop_path=dp,
                    norm_layer=norm_layer,
                )
                for dp in drop_path
            )
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm_layer(embed_dim)
        self._init_weights(pos_embed)

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size[0]

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def _init_weights(self, pos_embed: str) -> None:
        # MAE's initialisation: fixed sin-cos table, xavier on linear layers and
        # on the patch projection seen as a linear layer.
        with torch.no_grad():
            if pos_embed == "sincos":
                table = sincos_2d(self.embed_dim, *self.grid_size, cls_token=True)
                self.pos_embed.copy_(table[None].to(self.pos_embed.device))
            elif pos_embed == "learned":
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
            proj = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patch tokens with their position embedding, (B, N, D), no class token."""
        tokens = self.patch_embed(imgs)
        return tokens if self.pos_embed is None else tokens + self.pos_embed[:, 1:]

    def forward_tokens(self, tokens: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        """Run a set of patch tokens (B, L, D) with a fresh class token through
        the blocks and (unless ``final_norm=False``, as MAE's global-pool
        fine-tuning) the final norm; returns (B, 1 + L, D), class token first."""
        cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if not self.beit_blocks:
            for block in self.blocks:
                x = block(x)
            return self.norm(x) if final_norm else x
        if tokens.shape[1] != self.num_patches and (self.rel_pos_bias is not None or self.blocks[0].attn.window_size):
            raise ValueError(
                f"relative position bias is defined on the full {self.grid_size} patch grid; "
                f"got {tokens.shape[1]} of {self.num_patches} tokens"
            )
        shared = None if self.rel_pos_bias is None else self.rel_pos_bias()
        for block in self.blocks:
            x = block(x, shared_rel_pos_bias=shared)
        return self.norm(x) if final_norm else x

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Whole image: (B, 1 + N, D)."""
        return self.forward_tokens(self.embed_patches(imgs))


@torch.no_grad()
def timm_0_3_2_init_(vit: VisionTransformer) -> VisionTransformer:
    """Re-initialise ``vit`` as timm 0.3.2's ``VisionTransformer`` does - the
    initialisation of the published SdAE teacher, which is such a model:
    truncated normal (std 0.02) for every linear weight with zero bias, PyTorch's
    default ``Conv2d`` initialisation for the patch projection, truncated normal
    (std 0.02) for the class token and a learnable position embedding, LayerNorm
    at identity. (The student keeps MAE's xavier / sin-cos initialisation.)"""
    nn.init.trunc_normal_(vit.cls_token, std=0.02)
    if vit.pos_embed_kind == "learned":  # a fixed sin-cos table stays as it is
        nn.init.trunc_normal_(vit.pos_embed, std=0.02)
    for module in vit.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    vit.patch_embed.proj.reset_parameters()  # torch's default: kaiming-uniform(a=sqrt(5)) + uniform bias
    return vit


def build_vit(arch: str, **kwargs) -> VisionTransformer:
    """``arch`` is one of :data:`VIT_ARCHS`; keyword arguments override its values."""
    if arch not in VIT_ARCHS:
        raise ValueError(f"unknown ViT arch {arch!r}; choose one of {sorted(VIT_ARCHS)}")
    return VisionTransformer(**{**VIT_ARCHS[arch], **kwargs})


def vit_tiny_patch16(**kwargs) -> VisionTransformer:
    return build_vit("tiny", **kwargs)


def vit_small_patch16(**kwargs) -> VisionTransformer:
    return build_vit("small", **kwargs)


def vit_base_patch16(**kwargs) -> VisionTransformer:
    return build_vit("base", **kwargs)


def vit_large_patch16(**kwargs) -> VisionTransformer:
    return build_vit("large", **kwargs)


def vit_huge_patch14(**kwargs) -> VisionTransformer:
    return build_vit("huge", **kwargs)
