"""SdAE: a masked autoencoder whose decoder regresses the features of an EMA
teacher; with ``target="pixels"`` the same code is the MAE baseline."""

from typing import Literal

import torch
from torch import nn

from .decoder import MaskedDecoder
from .ema import ema_update_
from .losses import LossAxis, cosine_loss, masked_pixel_loss, normalize_per_token
from .masking import PatchMask, gather_tokens, random_patch_mask
from .teacher import TeacherInput, teacher_targets
from .vit import VIT_ARCHS, build_vit, timm_0_3_2_init_


class SdAE(nn.Module):
    """Student encoder + decoder, and (for feature targets) an EMA teacher.

    Args:
        arch: ViT size, a key of :data:`VIT_ARCHS`.
        img_size: input resolution.
        drop_path_rate: student stochastic depth (the teacher has none).
        mask_ratio: fraction of patches hidden from the student.
        decoder: ``embed_dim`` / ``depth`` / ``num_heads`` of the decoder.
        target: ``"teacher"`` (SdAE) or ``"pixels"`` (MAE baseline, no teacher).
        teacher_input: how the teacher is fed, see :class:`TeacherInput`.
        teacher_init: ``"random"`` - an independent ViT with a learned position
            embedding, initialised as timm 0.3.2 initialises a ViT (the published
            teacher) - or ``"student"`` (a copy).
        normalize_target: per-token normalisation of the teacher output (Eq. 3).
        loss_axis: ``"token"`` (Eq. 4, published multi-fold path) or ``"feature"``.
        norm_pix_loss: MAE baseline only: normalise each target patch.
        compile_blocks: opt-in ``torch.compile`` of every transformer block of the
            student, teacher and decoder (regional compilation: the blocks of a
            stack share one compiled graph per input shape, so compiling costs a
            few blocks, not the whole model). ``True`` uses torch's defaults; a
            dict is passed to ``torch.compile`` (``backend``, ``mode``,
            ``fullgraph``, ...). Parameter names and the state dict are unchanged.
    """

    def __init__(
        self,
        arch: str = "base",
        img_size: int = 224,
        drop_path_rate: float = 0.25,
        mask_ratio: float = 0.75,
        decoder: dict | None = None,
        target: Literal["teacher", "pixels"] = "teacher",
        teacher_input: TeacherInput | dict | None = None,
        teacher_init: Literal["random", "student"] = "random",
        normalize_target: bool = True,
        loss_axis: LossAxis = "token",
        norm_pix_loss: bool = True,
        compile_blocks: bool | dict = False,
    ) -> None:
        super().__init__()
        if target not in ("teacher", "pixels"):
            raise ValueError(f"target must be 'teacher' or 'pixels', got {target!r}")
        if teacher_init not in ("random", "student"):
            raise ValueError(f"teacher_init must be 'random' or 'student', got {teacher_init!r}")
        if loss_axis not in ("token", "feature"):
            raise ValueError(f"loss_axis must be 'token' or 'feature', got {loss_axis!r}")
        self.target = target
        self.mask_ratio = mask_ratio
        self.normalize_target = normalize_target
        self.loss_axis = loss_axis
        self.norm_pix_loss = norm_pix_loss
        self.student = build_vit(arch, img_size=img_size, drop_path_rate=drop_path_rate)
        width, patch = VIT_ARCHS[arch]["embed_dim"], self.student.patch_size
        out_dim = width if target == "teacher" else patch**2 * 3
        self.decoder = MaskedDecoder(self.student.grid_size, width, out_dim, **(decoder or {}))
        # Validate masking and teacher input here rather than at the first iteration
        # (a private generator leaves the global random stream untouched).
        probe = random_patch_mask(1, self.student.num_patches, mask_ratio, generator=torch.Generator())
        if target == "teacher":
            self.teacher_input = TeacherInput.build(teacher_input or {})
            self.teacher_input.target_ids(probe)
            pos_embed = "learned" if teacher_init == "random" else "sincos"
            self.teacher = build_vit(arch, img_size=img_size, drop_path_rate=0.0, pos_embed=pos_embed)
            if teacher_init == "student":
                self.teacher.load_state_dict(self.student.state_dict())
            else:
                timm_0_3_2_init_(self.teacher)
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        else:
            if teacher_input is not None:
                raise ValueError("teacher_input is meaningless with target='pixels' (no teacher)")
            self.teacher = None
        if compile_blocks:
            self.compile_blocks(**(compile_blocks if isinstance(compile_blocks, dict) else {}))

    def compile_blocks(self, **compile_kwargs) -> None:
        """``torch.compile`` each transformer block in place (``nn.Module.compile``:
        the module keeps its parameters and names; compilation happens at the
        first call). The loss, masking and gathers stay eager: they are a few
        cheap kernels around the blocks."""
        stacks = [self.student.blocks, self.decoder.blocks]
        if self.teacher is not None:
            stacks.append(self.teacher.blocks)
        for blocks in stacks:
            for block in blocks:
                block.compile(**compile_kwargs)

    def train(self, mode: bool = True) -> "SdAE":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # forward-only, always
        return self

    def sample_mask(self, batch_size: int, device: torch.device) -> PatchMask:
        return random_patch_mask(batch_size, self.student.num_patches, self.mask_ratio, device)

    def predict(self, imgs: torch.Tensor, mask: PatchMask) -> torch.Tensor:
        """Student encoder on the visible patches, decoder on all: (B, N, out_dim)."""
        visible = gather_tokens(self.student.embed_patches(imgs), mask.visible_ids)
        return self.decoder(self.student.forward_tokens(visible), mask.ids_restore)

    def forward(self, imgs: torch.Tensor, mask: PatchMask | None = None) -> dict[str, torch.Tensor]:
        if mask is None:
            mask = self.sample_mask(imgs.shape[0], imgs.device)
        pred = self.predict(imgs, mask)
        if self.teacher is None:
            loss = masked_pixel_loss(pred, imgs, mask.binary(), self.student.patch_size, self.norm_pix_loss)
            return {"loss": loss}
        target, ids = teacher_targets(self.teacher, imgs, mask, self.teacher_input)
        target = target.float()
        if self.normalize_target:
            target = normalize_per_token(target)
        batch, groups, per_group, width = target.shape
        pred = gather_tokens(pred, ids.flatten(1))
        if self.loss_axis == "token":
            shape = (batch * groups, per_group, width)  # one cosine per group and channel
        else:
            shape = (1, batch * groups * per_group, width)  # one cosine per token
        return {"loss": cosine_loss(pred.reshape(shape), target.reshape(shape), self.loss_axis)}

    @torch.no_grad()
    def update_teacher(self, momentum: float, skip: torch.Tensor | None = None) -> None:
        """EMA step over the encoder (decoder and mask token are not in the teacher);
        a non-zero ``skip`` tensor leaves the teacher unchanged (see :func:`ema_update_`)."""
        if self.teacher is None:
            raise RuntimeError("the MAE baseline (target='pixels') has no teacher to update")
        ema_update_(self.teacher, self.student, momentum, skip)
