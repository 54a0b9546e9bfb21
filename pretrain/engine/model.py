"""mmengine adapter of :class:`pretrain.models.SdAE`."""

import torch
import torch.distributed as dist
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from pretrain.models import SdAE

# ImageNet statistics on the 0-255 scale: images travel as uint8 and are
# normalised on the device by mmengine's ImgDataPreprocessor.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite; the step was not taken."""


@MODELS.register_module()
class SdAEPretrainer(BaseModel):
    """Runs :class:`SdAE` (or its MAE baseline) under an mmengine Runner.

    Keyword arguments other than ``data_preprocessor``/``init_cfg`` go to
    :class:`SdAE`. The checkpointed state holds ``sdae.student``,
    ``sdae.decoder`` and ``sdae.teacher``.
    """

    def __init__(self, data_preprocessor: dict | None = None, init_cfg: dict | None = None, **sdae):
        if data_preprocessor is None:
            data_preprocessor = dict(
                type="ImgDataPreprocessor", mean=IMAGENET_MEAN, std=IMAGENET_STD, non_blocking=True
            )
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.sdae = SdAE(**sdae)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "loss") -> dict:
        if mode != "loss":
            raise ValueError(f"SdAEPretrainer only trains (mode='loss'); got mode={mode!r}")
        return self.sdae(inputs)

    def parse_losses(self, losses: dict) -> tuple[torch.Tensor, dict]:
        """Stops the run before backward, the optimizer step and the EMA update
        when the loss is not finite on any rank."""
        loss, log_vars = super().parse_losses(losses)
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank stops together
        if not finite.item():
            hub = MessageHub.get_current_instance()
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()} on this rank) at iteration {hub.get_info('iter')} "
                f"(epoch {hub.get_info('epoch')}); stopped before the optimizer step and the teacher "
                "EMA update, so the last saved checkpoint is the last good state. Lower the learning "
                "rate, prefer bf16 over fp16, or check the input data."
            )
        return loss, log_vars

    def update_teacher(self, momentum: float) -> None:
        self.sdae.update_teacher(momentum)

    @property
    def has_teacher(self) -> bool:
        return self.sdae.teacher is not None
