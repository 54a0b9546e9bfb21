"""Random patch masking (MAE) and the multi-fold split of the masked patches (SdAE)."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PatchMask:
    """One random permutation of the patch indices per sample.

    The first ``num_visible`` entries of ``ids_shuffle`` are the patches the
    student sees; the rest are masked, in random order, so any prefix of
    :attr:`masked_ids` is itself a uniformly random subset of the masked patches.
    """

    ids_shuffle: torch.Tensor  # (B, N) int64
    num_visible: int

    @property
    def num_patches(self) -> int:
        return self.ids_shuffle.shape[1]

    @property
    def num_masked(self) -> int:
        return self.num_patches - self.num_visible

    @property
    def visible_ids(self) -> torch.Tensor:
        return self.ids_shuffle[:, : self.num_visible]

    @property
    def masked_ids(self) -> torch.Tensor:
        return self.ids_shuffle[:, self.num_visible :]

    @property
    def ids_restore(self) -> torch.Tensor:
        """Inverse permutation: puts shuffled tokens back in patch order."""
        return torch.argsort(self.ids_shuffle, dim=1)

    def binary(self) -> torch.Tensor:
        """(B, N) float mask in patch order, 1 = masked (MAE convention)."""
        mask = torch.ones_like(self.ids_shuffle, dtype=torch.float32)
        mask[:, : self.num_visible] = 0
        return torch.gather(mask, 1, self.ids_restore)


def random_patch_mask(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> PatchMask:
    """Per-sample uniform masking; keeps ``int(N * (1 - mask_ratio))`` patches as MAE does."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    num_visible = int(num_patches * (1 - mask_ratio))
    if num_visible < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch out of {num_patches}")
    noise = torch.rand(batch_size, num_patches, device=device, generator=generator)
    return PatchMask(torch.argsort(noise, dim=1), num_visible)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), ids (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def split_into_folds(masked_ids: torch.Tensor, num_tokens: int, num_folds: int) -> torch.Tensor:
    """Split the first ``num_tokens`` masked patches into ``num_folds`` disjoint folds.

    Returns (B, num_folds, num_tokens // num_folds). As in the published code, a
    remainder of ``num_tokens`` not divisible by ``num_folds`` is dropped. The
    masked ids are already in random order, so consecutive chunks are random folds.
    """
    available = masked_ids.shape[1]
    if not 1 <= num_tokens <= available:
        raise ValueError(f"the teacher can take 1..{available} masked patches, got num_tokens={num_tokens}")
    if not 1 <= num_folds <= num_tokens:
        raise ValueError(f"num_folds must be in 1..num_tokens={num_tokens}, got {num_folds}")
    per_fold = num_tokens // num_folds
    return masked_ids[:, : per_fold * num_folds].reshape(masked_ids.shape[0], num_folds, per_fold)
