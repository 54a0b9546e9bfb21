"""Plain-PyTorch SdAE / MAE models; importable with only torch and timm."""

from .decoder import MaskedDecoder
from .ema import cosine_momentum, ema_update_
from .losses import cosine_loss, masked_pixel_loss, normalize_per_token, patchify
from .masking import PatchMask, gather_tokens, random_patch_mask, split_into_folds
from .pos_embed import sincos_2d
from .sdae import SdAE
from .teacher import TeacherInput, teacher_targets
from .vit import (
    VIT_ARCHS,
    VisionTransformer,
    build_vit,
    timm_0_3_2_init_,
    vit_base_patch16,
    vit_huge_patch14,
    vit_large_patch16,
    vit_small_patch16,
    vit_tiny_patch16,
)

__all__ = [
    "VIT_ARCHS",
    "MaskedDecoder",
    "PatchMask",
    "SdAE",
    "TeacherInput",
    "VisionTransformer",
    "build_vit",
    "cosine_loss",
    "cosine_momentum",
    "ema_update_",
    "gather_tokens",
    "masked_pixel_loss",
    "normalize_per_token",
    "patchify",
    "random_patch_mask",
    "sincos_2d",
    "split_into_folds",
    "teacher_targets",
    "timm_0_3_2_init_",
    "vit_base_patch16",
    "vit_huge_patch14",
    "vit_large_patch16",
    "vit_small_patch16",
    "vit_tiny_patch16",
]
