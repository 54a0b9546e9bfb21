"""CAE's attentive probe (Chen et al., "Context Autoencoder for Self-Supervised
Representation Learning", arXiv 2202.03026): a learnable query attends once to the
frozen encoder's output tokens; the attended feature goes through BatchNorm without
affine parameters and a linear classifier. Module names and initialisation follow
the official PyTorch release (Atten4Vis/CAE, ``models/modeling_finetune.py``:
``AttentiveBlock``, ``CrossAttention``, ``linear_type="attentive"``)."""

import torch
import torch.nn.functional as F
from torch import nn


class AttentivePooling(nn.Module):
    """CAE's attentive block: one multi-head cross-attention from a learnable query
    token to a set of tokens, returning one ``dim``-vector per image.

    What the block has, in order:
      - ``query_token`` (1, 1, dim), initialised to zeros (the PyTorch release; the
        Paddle release draws it from a truncated normal, std 0.02);
      - three separate LayerNorms (eps 1e-6): ``norm_q`` on the query, ``norm_k`` on
        the tokens used as keys, ``norm_v`` on the same tokens used as values;
      - projections ``q``, ``k``, ``v`` (dim -> dim) with a bias on the query and the
        value only, as in BEiT/CAE attention (a key bias would shift every logit of a
        query equally, so it never changes the attention);
      - per head, softmax(q k^T / sqrt(dim / num_heads)) v;
      - the output projection ``proj`` (dim -> dim, with bias).
    What it does not have: no residual connection, no MLP, no LayerNorm after the
    attention (the release builds one, ``norm2_cross``, that its forward never
    uses), no position embedding on the query or the keys (CAE passes 0), no
    dropout (the recipe's rates are 0).

    Linear weights: truncated normal (std 0.02), biases zero; LayerNorms at identity.
    With the zero query, the first forward attends uniformly to all tokens.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        for linear in (self.q, self.k, self.v, self.proj):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) -> (B, heads, L, dim / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, L, dim): keys and values. Returns the attended feature (B, dim)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.query_token.shape[-1]:
            raise ValueError(
                f"attentive probe expects tokens of shape (batch, length, {self.query_token.shape[-1]}), "
                f"got {tuple(tokens.shape)}"
            )
        query = self.norm_q(self.query_token).expand(tokens.shape[0], -1, -1)
        q = self._heads(self.q(query))
        k = self._heads(self.k(self.norm_k(tokens)))
        v = self._heads(self.v(self.norm_v(tokens)))
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, dim / heads)
        return self.proj(attended.transpose(1, 2).flatten(2))[:, 0]


def attentive_probe_head(dim: int, num_heads: int, num_classes: int) -> nn.Sequential:
    """CAE's whole attentive-probing head on (B, L, dim) tokens: :class:`AttentivePooling`,
    then BatchNorm1d without affine parameters (eps 1e-5, CAE's ``LP_BatchNorm``), then
    a linear classifier with weights drawn from N(0, 0.01^2) and zero bias."""
    classifier = nn.Linear(dim, num_classes)
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    return nn.Sequential(AttentivePooling(dim, num_heads), nn.BatchNorm1d(dim, affine=False, eps=1e-5), classifier)
