"""The ViT as a dense backbone: features tapped after chosen blocks, turned into
a 4-level pyramid (strides 4, 8, 16, 32) for UperNet (mmseg) and FPN (mmdet).

Plain PyTorch + timm; ``segmentation`` and ``detection`` register it with their
registries. Recipes (BEiT / MAE / CAE): taps after blocks 4, 6, 8, 12; stride 4
= deconv-norm-GELU-deconv, 8 = deconv, 16 = identity, 32 = 2x2 max-pool.
Frozen-feature protocols (DINOv2's linear segmentation) take the tapped maps
themselves (``pyramid=False``) after the encoder's final norm, from a frozen encoder.
"""

from contextlib import nullcontext
from typing import Literal

import torch
from timm.layers import resize_rel_pos_bias_table
from torch import nn
from torch.utils.checkpoint import checkpoint

from pretrain.checkpoints.canonical import BackboneArch, backbone_source, load_state_dict_strictly
from pretrain.models.pos_embed import resize_pos_embed

NORMS = {"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm}


class FeaturePyramid(nn.Module):
    """Four maps at 4x, 2x, 1x and 0.5x the resolution of the stride-16 ViT tokens."""

    def __init__(self, dim: int, norm: str = "SyncBN") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"pyramid norm must be one of {sorted(NORMS)}, got {norm!r}")
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, 2), NORMS[norm](dim), nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(maps) != 4:
            raise ValueError(f"the pyramid takes 4 tapped feature maps, got {len(maps)}")
        return self.up4(maps[0]), self.up2(maps[1]), maps[2], self.down2(maps[3])


class DenseViT(nn.Module):
    """ViT encoder + :class:`FeaturePyramid`, loaded strictly from a canonical file.

    Args:
        checkpoint: canonical backbone file; ``None`` with ``arch`` builds a randomly
            initialised encoder (control runs).
        img_size: training crop size; sets the position-embedding and relative-bias grid.
        out_indices: blocks whose outputs feed the pyramid (0-based).
        rel_pos_bias: ``"per_block"`` gives every block its own relative position
            table - zero-initialised when the file has none (MAE/CAE files; exact,
            since the key bias it replaces never changes attention), a shared BEiT
            table copied to each block, tables resized to the grid; ``"none"`` keeps
            only the absolute position embedding, interpolated to each input at run time.
        layer_scale_init: layer-scale value added when the file has none (1.0 is
            the identity); ``None`` adds none. Learned values in the file are kept.
        drop_path_rate: stochastic depth.
        norm: ``"SyncBN"`` or ``"BN"`` inside the pyramid.
        with_cp: recompute each block in the backward pass (activation
            checkpointing) to fit large detection inputs in memory.
        pyramid: ``False`` returns the tapped maps at patch resolution (any number
            of taps) instead of the 4-level pyramid, and builds no pyramid.
        final_norm: pass every tapped map through the encoder's final norm (DINOv2's
            ``get_intermediate_layers(norm=True)``; identity for encoders whose norm
            acts on the pooled token only).
        frozen: keep the encoder as loaded - no gradients (``requires_grad=False``,
            run under ``torch.no_grad``) and always in eval mode (no drop path),
            whatever mode the segmentor is put in.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        arch: dict | None = None,
        img_size: int = 512,
        out_indices: tuple[int, ...] = (3, 5, 7, 11),
        rel_pos_bias: Literal["per_block", "none"] = "per_block",
        layer_scale_init: float | None = 1.0,
        drop_path_rate: float = 0.1,
        norm: str = "SyncBN",
        with_cp: bool = False,
        pyramid: bool = True,
        final_norm: bool = False,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        if rel_pos_bias not in ("per_block", "none"):
            raise ValueError(f"rel_pos_bias must be 'per_block' or 'none', got {rel_pos_bias!r}")
        backbone = backbone_source(checkpoint, arch)
        source, state = backbone.arch, backbone.state_dict or None
        self.backbone_meta = backbone.metadata
        if rel_pos_bias == "none" and source.rel_pos_bias != "none":
            raise ValueError(
                f"{checkpoint} was pretrained with {source.rel_pos_bias} relative position bias; "
                "dropping it would lose its position information: use rel_pos_bias='per_block'"
            )
        if not all(0 <= i < source.depth for i in out_indices) or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(
                f"out_indices must be increasing block indices in 0..{source.depth - 1}, got {out_indices}"
            )
        if pyramid and len(out_indices) != 4:
            raise ValueError(f"the pyramid takes 4 taps (out_indices), got {out_indices}; or set pyramid=False")
        if not out_indices:
            raise ValueError("out_indices is empty: name the blocks whose outputs to return")
        adds_rel_pos = rel_pos_bias == "per_block" and source.rel_pos_bias == "none"
        adds_layer_scale = not source.layer_scale and layer_scale_init is not None
        self.encoder = source.build(
            img_size=img_size,
            drop_path_rate=drop_path_rate,
            # relative bias lives in timm's BEiT blocks, which have no key bias
            qkv_bias="qv" if rel_pos_bias == "per_block" and source.qkv_bias == "qkv" else source.qkv_bias,
            layer_scale=layer_scale_init if adds_layer_scale else (1.0 if source.layer_scale else None),
            rel_pos_bias=rel_pos_bias,
            dynamic_img_size=True,  # sizes are checked in tap() with a clear message
        )
        if adds_rel_pos:
            for block in self.encoder.blocks:
                nn.init.zeros_(block.attn.relative_position_bias_table)
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.has_rel_pos_bias = rel_pos_bias != "none"
        self.final_norm = final_norm
        self.frozen = frozen
        self.pyramid = FeaturePyramid(source.embed_dim, norm) if pyramid else None
        if state is not None:
            new_keys = frozenset(
                k
                for k in self.encoder.state_dict()
                if (adds_rel_pos and k.endswith("relative_position_bias_table"))
                or (adds_layer_scale and k.endswith(("gamma_1", "gamma_2", "ls1.gamma", "ls2.gamma")))
            )
            state = self._adapt(state, source)
            load_state_dict_strictly(self.encoder, state, str(checkpoint), new_keys)
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "DenseViT":
        super().train(mode)
        if self.frozen:  # the Runner puts the whole segmentor in train mode
            self.encoder.eval()
        return self

    def _adapt(self, state: dict[str, torch.Tensor], source: BackboneArch) -> dict[str, torch.Tensor]:
        """Canonical weights -> this encoder: q/v biases from a full qkv bias (the
        key part has no effect on attention), shared relative tables copied to
        every block, relative tables resized to the grid."""
        encoder = self.encoder
        target = encoder.state_dict()
        state = dict(state)
        for i in range(source.depth):
            bias = f"blocks.{i}.attn.qkv.bias"
            if bias in state and f"blocks.{i}.attn.q_bias" in target:
                q, _, v = state.pop(bias).chunk(3)
                state[f"blocks.{i}.attn.q_bias"], state[f"blocks.{i}.attn.v_bias"] = q, v
        shared = state.pop("rel_pos_bias.relative_position_bias_table", None)
        for i in range(source.depth):
            key = f"blocks.{i}.attn.relative_position_bias_table"
            if key not in target:
                continue
            table = state.get(key, shared)
            if table is not None and table.shape != target[key].shape:
                table = resize_rel_pos_bias_table(
                    table,
                    new_window_size=encoder.grid_size,
                    new_bias_shape=tuple(target[key].shape),
                    old_window_size=source.grid,
                )
            if table is not None:
                state[key] = table
        return state

    def tap(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the ``out_indices`` blocks as (B, D, H/p, W/p) maps (after the
        encoder's final norm only with ``final_norm``)."""
        with torch.no_grad() if self.frozen else nullcontext():
            return self._tap(imgs)

    def _tap(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        encoder = self.encoder
        p = encoder.patch_size
        if imgs.shape[-2] % p or imgs.shape[-1] % p:
            raise ValueError(f"input {tuple(imgs.shape[-2:])} is not a multiple of the patch size {p}")
        grid = (imgs.shape[-2] // p, imgs.shape[-1] // p)
        if grid != encoder.grid_size and self.has_rel_pos_bias:
            raise ValueError(f"relative position bias is built for {encoder.grid_size} patches, got {grid}")
        x = encoder.patch_embed(imgs)
        if encoder.pos_embed is not None:
            pos = encoder.pos_embed
            if grid != encoder.grid_size:
                pos = resize_pos_embed(pos, grid)  # non-square: bicubic to the input grid
            x = x + pos[:, 1:]
            cls = encoder.cls_token + pos[:, :1]
        else:
            cls = encoder.cls_token
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        maps = []
        for i, block in enumerate(encoder.blocks):  # per-block tables only: a shared one was copied
            x = checkpoint(block, x, use_reentrant=False) if self.with_cp and x.requires_grad else block(x)
            if i in self.out_indices:
                tokens = encoder.norm(x[:, 1:]) if self.final_norm else x[:, 1:]
                maps.append(tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid))
        return maps

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = self.tap(imgs)
        return tuple(maps) if self.pyramid is None else self.pyramid(maps)
