"""Fixed 2-D sine-cosine position embeddings (MAE / MoCo v3 layout)."""

import math

import torch


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(L,) positions -> (L, embed_dim): first half sin, second half cos."""
    if embed_dim % 2:
        raise ValueError(f"1-D sin-cos embedding needs an even width, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> torch.Tensor:
    """Position embedding of a row-major ``grid_h x grid_w`` patch grid, (L, embed_dim).

    As in MAE, the first half of the channels encodes the column index and the
    second half the row index, so square-grid values equal the official ones
    and released checkpoints line up. With ``cls_token`` a zero row is prepended.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb = torch.cat([sincos_1d(embed_dim // 2, cols.flatten()), sincos_1d(embed_dim // 2, rows.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, 1 + h*w, D) position embedding (class token first, square
    source grid) to ``grid`` with bicubic interpolation, as MAE / BEiT do when
    fine-tuning at another resolution. The class-token row is kept as is."""
    num_patches = pos_embed.shape[1] - 1
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"position embedding of {num_patches} patches is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)
