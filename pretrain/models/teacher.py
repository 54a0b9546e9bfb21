"""How the EMA teacher is fed (paper Sec. 2.2, Table 5, Fig. 4b).

* ``full_image``  - all N patches in one sequence; targets taken at the masked positions.
* ``masked``      - all masked patches in one sequence (the "only masked" ablation).
* ``crop``        - a random subset of ``num_tokens`` masked patches, one sequence.
* ``multi_fold``  - ``num_tokens`` masked patches (default: all) split into
  ``num_folds`` disjoint random folds, each its own sequence with its own class
  token, batched together as ``B * num_folds`` sequences.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from .masking import PatchMask, gather_tokens, split_into_folds
from .vit import VisionTransformer

FeedingKind = Literal["full_image", "masked", "crop", "multi_fold"]


@dataclass(frozen=True)
class TeacherInput:
    kind: FeedingKind = "multi_fold"
    num_tokens: int | None = None  # ``shrink_num`` of the published code; None = all masked
    num_folds: int = 3  # ``ncrop_loss`` of the published code

    def __post_init__(self) -> None:
        kinds = ("full_image", "masked", "crop", "multi_fold")
        if self.kind not in kinds:
            raise ValueError(f"teacher input kind must be one of {kinds}, got {self.kind!r}")
        if self.kind in ("full_image", "masked") and (self.num_tokens is not None or self.num_folds != 1):
            raise ValueError(f"teacher input {self.kind!r} takes neither num_tokens nor num_folds != 1")
        if self.kind == "crop" and (self.num_tokens is None or self.num_folds != 1):
            raise ValueError("teacher input 'crop' needs num_tokens (patches kept) and num_folds=1")
        if self.kind == "multi_fold" and self.num_folds < 2:
            raise ValueError(f"teacher input 'multi_fold' needs num_folds >= 2, got {self.num_folds}")

    @classmethod
    def build(cls, spec: "TeacherInput | dict") -> "TeacherInput":
        if isinstance(spec, TeacherInput):
            return spec
        spec = dict(spec)
        kind = spec.pop("kind", "multi_fold")
        if kind in ("full_image", "masked", "crop"):
            spec.setdefault("num_folds", 1)
        try:
            return cls(kind=kind, **spec)
        except TypeError as err:
            raise ValueError(f"bad teacher_input {spec}: {err}") from None

    def target_ids(self, mask: PatchMask) -> torch.Tensor:
        """Patch indices of the targets, grouped as the loss groups them: (B, G, n)."""
        if self.kind in ("full_image", "masked"):
            return mask.masked_ids.unsqueeze(1)
        num_tokens = mask.num_masked if self.num_tokens is None else self.num_tokens
        return split_into_folds(mask.masked_ids, num_tokens, self.num_folds)


@torch.no_grad()
def teacher_targets(
    teacher: VisionTransformer, imgs: torch.Tensor, mask: PatchMask, feeding: TeacherInput
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher features (B, G, n, D) at patch ids (B, G, n), class-token outputs dropped."""
    ids = feeding.target_ids(mask)
    batch, groups, per_group = ids.shape
    if feeding.kind == "full_image":
        features = gather_tokens(teacher(imgs)[:, 1:], ids.flatten(1))
    else:
        # Embed the whole image (as the published teacher does), then keep each
        # group's tokens; every group becomes one sequence with its own class token.
        tokens = gather_tokens(teacher.embed_patches(imgs), ids.flatten(1))
        tokens = tokens.reshape(batch * groups, per_group, -1)
        features = teacher.forward_tokens(tokens)[:, 1:]
    return features.reshape(batch, groups, per_group, -1), ids
