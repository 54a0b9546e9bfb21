"""mmengine adapter of :class:`pretrain.models.SdAE`: the model, its data
preprocessor (with optional JPEG decoding on the device) and the device-side
record of the losses that keeps the training step free of host synchronisations."""

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, ImgDataPreprocessor
from mmengine.registry import MODELS

from pretrain.data.device_decode import decode_and_crop
from pretrain.data.pretrain_dataset import unreadable
from pretrain.models import SdAE

# ImageNet statistics on the 0-255 scale: images travel as uint8 and are
# normalised on the device by the data preprocessor.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

ADVICE = "Lower the learning rate, prefer bf16 over fp16, or check the input data."


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite; the step was not taken."""


@dataclass
class PendingLoss:
    """One iteration's losses, still on the device."""

    iteration: int
    epoch: int
    log_vars: dict[str, torch.Tensor]
    finite: torch.Tensor  # 0-dim; on every rank the minimum over all ranks


@dataclass
class LoggedLoss:
    """One iteration's losses on the host, after a flush."""

    iteration: int
    epoch: int
    values: dict[str, float]
    finite: bool


class DeviceLossBuffer:
    """The losses of the iterations since the last flush, kept on the device, and
    the flag that turns every optimizer step and teacher update into a no-op from
    the first non-finite loss on (read on the device by a fused optimizer as its
    ``found_inf`` and by the teacher EMA), so that no iteration waits for the host."""

    def __init__(self, device: torch.device) -> None:
        self.pending: list[PendingLoss] = []
        self.skip_updates = torch.zeros((), dtype=torch.float32, device=device)

    def record(self, iteration: int, epoch: int, log_vars: dict[str, torch.Tensor], finite: torch.Tensor) -> None:
        self.pending.append(PendingLoss(iteration, epoch, {k: v.detach() for k, v in log_vars.items()}, finite))
        # In place (the optimizer holds this tensor) and sticky: once set it stays set.
        bad = torch.logical_not(finite).to(self.skip_updates.dtype)
        torch.maximum(self.skip_updates, bad, out=self.skip_updates)

    def drain(self) -> list[LoggedLoss]:
        """Every pending iteration's values on the host, with one synchronisation."""
        if not self.pending:
            return []
        flat = [v.float().reshape(()) for p in self.pending for v in (*p.log_vars.values(), p.finite)]
        host = iter(torch.stack(flat).tolist())
        logged = []
        for p in self.pending:
            values = {name: next(host) for name in p.log_vars}
            logged.append(LoggedLoss(p.iteration, p.epoch, values, bool(next(host))))
        self.pending.clear()
        return logged


def non_finite_message(loss: float, iteration: int, epoch: int, seen_after: int | None = None) -> str:
    if seen_after is None:
        return (
            f"non-finite loss ({loss} on this rank) at iteration {iteration} (epoch {epoch}); stopped "
            "before the optimizer step and the teacher EMA update, so the last saved checkpoint is the "
            f"last good state. {ADVICE}"
        )
    return (
        f"non-finite loss ({loss} on this rank) at iteration {iteration} (epoch {epoch}), found by the "
        f"check after iteration {seen_after}; the optimizer steps and teacher EMA updates of iterations "
        f"{iteration}-{seen_after} were skipped on the device, so the student, decoder, optimizer and "
        "teacher are as they were before the bad iteration and the last saved checkpoint is the last "
        f"good state. {ADVICE}"
    )


@MODELS.register_module()
class PretrainDataPreprocessor(ImgDataPreprocessor):
    """mmengine's ``ImgDataPreprocessor`` (to the device, float, normalised) that
    also takes batches of encoded images from ``PretrainImageDataset(decode="device")``:
    ``inputs`` is then a list of ``bytes`` with their crop records in ``crop``,
    decoded and cropped on the device first (:func:`decode_and_crop`)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data["inputs"]
        if isinstance(inputs, list | tuple) and inputs and isinstance(inputs[0], bytes):
            data = dict(inputs=self._decode(inputs, data["crop"], data.get("path")))
        return super().forward(data, training)

    def _decode(self, encoded: list[bytes], records: torch.Tensor, paths: list[str] | None) -> torch.Tensor:
        try:
            return decode_and_crop(encoded, records, self.device)
        except RuntimeError:
            pass
        # One by one: a JPEG the device's decoder refuses (nvJPEG does not take every
        # variant) is decoded on the CPU; one that no decoder takes stops the run, named.
        images = []
        for i in range(len(encoded)):
            one = (encoded[i : i + 1], records[i : i + 1])
            name = paths[i] if paths else f"image #{i} of the batch"
            try:
                images.append(decode_and_crop(*one, self.device))
            except RuntimeError as device_error:
                try:
                    images.append(decode_and_crop(*one, "cpu").to(self.device))
                except RuntimeError as err:
                    raise unreadable(name, err) from err
                refused = f"{name}: decoded on the CPU, the device's decoder refused it ({device_error})"
                warnings.warn(refused, stacklevel=2)
        return torch.cat(images)


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
                type="PretrainDataPreprocessor", mean=IMAGENET_MEAN, std=IMAGENET_STD, non_blocking=True
            )
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.sdae = SdAE(**sdae)
        # Set by DeferredLossHook when the optimizer can skip a step on the device;
        # None: every iteration's loss is checked on the host.
        self.loss_buffer: DeviceLossBuffer | None = None

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "loss") -> dict:
        if mode != "loss":
            raise ValueError(f"SdAEPretrainer only trains (mode='loss'); got mode={mode!r}")
        return self.sdae(inputs)

    def parse_losses(self, losses: dict) -> tuple[torch.Tensor, dict]:
        """A loss that is not finite on any rank stops the run.

        Without a :class:`DeviceLossBuffer` it is checked on the host every
        iteration (one synchronisation), before backward, the optimizer step
        and the EMA update. With one (``DeferredLossHook`` sets it) the loss and
        its finiteness are recorded on the device, the optimizer step and EMA
        update of that and every later iteration are skipped there, and the hook
        raises at its next flush; the log values reach the log through the hook.
        """
        loss, log_vars = super().parse_losses(losses)
        finite = torch.isfinite(loss.detach())
        if dist.is_available() and dist.is_initialized():
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank stops together
        hub = MessageHub.get_current_instance()
        iteration, epoch = hub.get_info("iter"), hub.get_info("epoch")
        if self.loss_buffer is not None:
            self.loss_buffer.record(iteration, epoch, log_vars, finite)
            return loss, {}
        if not finite.item():
            raise NonFiniteLossError(non_finite_message(loss.item(), iteration, epoch))
        return loss, log_vars

    def update_teacher(self, momentum: float) -> None:
        skip = None if self.loss_buffer is None else self.loss_buffer.skip_updates
        self.sdae.update_teacher(momentum, skip)

    @property
    def has_teacher(self) -> bool:
        return self.sdae.teacher is not None
