"""Targets and losses: the paper's Eq. 3 (per-token normalisation) and Eq. 4
(cosine reconstruction), plus MAE's normalised-pixel loss for the baseline."""

from typing import Literal

import torch
import torch.nn.functional as F

LossAxis = Literal["token", "feature"]


def normalize_per_token(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3: standardise every token over its last (feature) dimension.

    Uses the unbiased variance, as ``Tensor.var`` does in the published SdAE
    code (and MAE's ``norm_pix_loss``).
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + eps) ** 0.5


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, axis: LossAxis = "token") -> torch.Tensor:
    """``1 - cos`` between predictions and targets shaped (G, n, D).

    ``axis="token"`` (Eq. 4 and the published multi-fold / only-masked paths):
    one cosine per group and channel over the n tokens of the group, then the mean.
    ``axis="feature"`` (the published full-image path): one cosine per token over
    its D channels, then the mean over all tokens.
    Computed in float32 whatever the autocast dtype.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"expected two (G, n, D) tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.float(), target.float()
    if axis == "token":
        cos = F.cosine_similarity(pred, target, dim=1)
    elif axis == "feature":
        cos = F.cosine_similarity(pred, target, dim=-1)
    else:
        raise ValueError(f"loss axis must be 'token' or 'feature', got {axis!r}")
    return 1.0 - cos.mean()


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch_size**2 * C), patches row-major, pixels (p, q, c) as in MAE."""
    b, c, h, w = imgs.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
    x = imgs.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // patch_size) * (w // patch_size), patch_size**2 * c)


def masked_pixel_loss(
    pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, normalize: bool = True
) -> torch.Tensor:
    """MAE: mean squared error on (per-patch normalised) pixels of the masked patches.

    pred (B, N, p*p*3), imgs (B, 3, H, W), mask (B, N) with 1 = masked.
    """
    target = patchify(imgs.float(), patch_size)
    if normalize:
        target = normalize_per_token(target)
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()
