"""MAE-style lightweight decoder: fills the masked positions with a learned mask
token and predicts a target vector for every patch."""

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .pos_embed import sincos_2d


class MaskedDecoder(nn.Module):
    """Predicts ``out_dim`` values per patch from the encoder's visible tokens.

    ``out_dim`` is the teacher width for SdAE (feature targets) or
    ``patch_size**2 * 3`` for the MAE pixel baseline.
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        out_dim: int,
        embed_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        num_patches = grid_size[0] * grid_size[1]
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_2d(embed_dim, *grid_size, cls_token=True)[None], requires_grad=False)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, out_dim)
        self.num_patches = num_patches
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent: encoder output (B, 1 + V, encoder_dim), class token first, visible
        tokens in shuffle order; ids_restore (B, N). Returns (B, N, out_dim) in patch order."""
        x = self.embed(latent)
        batch, num_visible = x.shape[0], x.shape[1] - 1
        mask_tokens = self.mask_token.expand(batch, self.num_patches - num_visible, -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))[:, 1:]
