"""Fully sharded data-parallel training (torch's FSDP2, ``fully_shard``) as an
mmengine strategy for ``FlexibleRunner``: ``runner_type = "FlexibleRunner"`` and
``strategy = dict(type="FullyShardStrategy", ...)`` in a config.

Why not mmengine 0.10.7's own ``FSDPStrategy``: it wraps FSDP1
(``FullyShardedDataParallel``) with ``device_id=LOCAL_RANK``, which fails on a
machine without a GPU ("Found no NVIDIA driver on your system"); and FSDP1 keeps
its parameters as flattened 1-D shards outside forward, so this project's
optimizer constructors, which choose weight decay by ``param.ndim``, would decay
no parameter at all, and the EMA teacher update would see 1-D student shards
("cls_token: teacher (1, 1, 192) vs student (192,)"). FSDP2 keeps every
parameter under its own name and shape (a DTensor sharded along dim 0), runs on
CPU with gloo as on GPUs with NCCL, and leaves parameters it is told to ignore
as they are.
"""

import re
import time
from collections.abc import Sequence

import mmengine
import torch.distributed as dist
from mmengine._strategy import DDPStrategy
from mmengine.device import get_device
from mmengine.dist import is_main_process
from mmengine.optim import AmpOptimWrapper, BaseOptimWrapper, OptimWrapper
from mmengine.registry import STRATEGIES
from mmengine.runner.checkpoint import save_checkpoint
from mmengine.utils import get_git_hash
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

from .checkpoint import ATOMIC_BACKEND

# Whole (unsharded) state dicts in checkpoints: the same keys and shapes as a plain
# Runner's, on the CPU, gathered on rank 0 only (the one that writes).
SAVE_OPTIONS = StateDictOptions(full_state_dict=True, cpu_offload=True)
_BASE_PARAM_SETTINGS = "base_param_settings"  # mmengine's record of the lrs its schedulers started from


@STRATEGIES.register_module()
class FullyShardStrategy(DDPStrategy):
    """Shards the trained modules of the model across all processes with FSDP2.

    Args:
        unit_types: class names of the layers that become FSDP units (gathered
            for their forward and backward only, then freed again), e.g. the
            transformer ``Block``; the parameters outside them form one unit at
            the root. Layers inside ``replicated_modules`` are left alone.
        replicated_modules: names of submodules (as in ``model.named_modules()``)
            kept whole on every rank and out of FSDP: the SdAE teacher,
            ``"sdae.teacher"``, which the EMA writes on every rank and no
            optimizer touches. They must have no trainable parameter (their
            gradients would not be averaged across ranks). They start equal on
            every rank: mmengine broadcasts rank 0's initial weights before wrapping.
        reshard_after_forward: free the gathered parameters after forward and
            gather them again for backward (less memory, more communication).
        **kwargs: mmengine's ``DDPStrategy`` arguments other than ``model_wrapper``.

    Checkpoints hold the whole model and optimizer state, gathered onto rank 0,
    which writes one file atomically (as ``SafeCheckpointHook`` with the
    ``atomic_local`` backend does for the plain Runner): the model's keys and
    shapes are those of a plain Runner's checkpoint, so the conversion tools
    read both. The optimizer state is keyed by parameter name, not by index:
    resume a run with the runner and strategy that wrote it.

    Not supported, refused when the run starts: fp16 dynamic loss scaling (its
    overflow check would see only this rank's gradient shards; use bf16) and a
    single process (there is nothing to shard across).
    """

    def __init__(
        self,
        *,
        unit_types: Sequence[str] = ("Block",),
        replicated_modules: Sequence[str] = (),
        reshard_after_forward: bool = True,
        **kwargs,
    ) -> None:
        if kwargs.get("model_wrapper") is not None:
            raise ValueError(
                "FullyShardStrategy takes no model_wrapper: it shards the model itself with fully_shard "
                "(set unit_types / replicated_modules instead)"
            )
        super().__init__(**kwargs)
        if isinstance(unit_types, str) or isinstance(replicated_modules, str):
            raise TypeError("FullyShardStrategy unit_types and replicated_modules are lists of names, not a string")
        self.unit_types = tuple(unit_types)
        self.replicated_modules = tuple(replicated_modules)
        self.reshard_after_forward = reshard_after_forward

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "FullyShardStrategy shards the model across processes, but this run has one: start it with "
                "tools/dist_train.sh (torchrun) or --launcher pytorch/slurm, or use the plain Runner "
                "(a config without runner_type/strategy)"
            )
        model = self.convert_model(model.to(get_device()))
        replicated = self._replicated_parameters(model)
        units = self._units(model)
        for unit in units:
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, reshard_after_forward=self.reshard_after_forward, ignored_params=replicated)
        sharded = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in replicated)
        self.logger.info(
            f"FullyShardStrategy: {sharded / 1e6:.1f} M parameters sharded over {dist.get_world_size()} processes "
            f"in {len(units)} {'/'.join(self.unit_types)} units and the root; whole on every rank: "
            f"{', '.join(self.replicated_modules) or 'nothing'} ({sum(p.numel() for p in replicated) / 1e6:.1f} M)"
        )
        return model

    def _replicated_parameters(self, model: nn.Module) -> set[nn.Parameter]:
        modules = dict(model.named_modules())
        params: set[nn.Parameter] = set()
        for name in self.replicated_modules:
            if name not in modules:
                close = [n for n in modules if n and n.split(".")[-1] == name.split(".")[-1]]
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"FullyShardStrategy replicated_modules: the model has no submodule {name!r}{hint}")
            trainable = [n for n, p in modules[name].named_parameters() if p.requires_grad]
            if trainable:
                raise ValueError(
                    f"FullyShardStrategy replicated_modules: {name!r} has trainable parameters ({trainable[0]}, ...); "
                    "a module kept whole on every rank must not be optimised (its gradients would not be averaged)"
                )
            params.update(modules[name].parameters())
        return params

    def _units(self, model: nn.Module) -> list[nn.Module]:
        """The layers to shard one by one: those of ``unit_types`` outside the replicated modules."""
        outside = [rf"^{re.escape(name)}(\.|$)" for name in self.replicated_modules]
        units = [
            module
            for name, module in model.named_modules()
            if type(module).__name__ in self.unit_types and not any(re.match(p, name) for p in outside)
        ]
        if not units:
            raise ValueError(
                f"FullyShardStrategy unit_types {list(self.unit_types)}: the model ({type(model).__name__}) has no "
                "such layer outside the replicated modules; name the class of its repeated layers (e.g. 'Block')"
            )
        return units

    def build_optim_wrapper(self, optim_wrapper, model: nn.Module | None = None) -> BaseOptimWrapper:
        wrapper = super().build_optim_wrapper(optim_wrapper, model)
        if not isinstance(wrapper, OptimWrapper):
            raise TypeError(f"FullyShardStrategy takes one optimizer (an OptimWrapper), not {type(wrapper).__name__}")
        if isinstance(wrapper, AmpOptimWrapper) and wrapper.loss_scaler.is_enabled():
            raise ValueError(
                "FullyShardStrategy cannot train with fp16 dynamic loss scaling: its overflow check would see "
                "only this rank's gradient shards, and the ranks could disagree on skipping a step. Train in "
                "bf16 (optim_wrapper dtype='bfloat16', loss_scale=dict(enabled=False); tools/train.py --amp bf16)"
            )
        return wrapper

    def model_state_dict(self) -> dict:
        """The whole model's state on rank 0 (on the CPU); empty on the other ranks."""
        return get_model_state_dict(self.model, options=SAVE_OPTIONS)

    def optim_state_dict(self) -> dict:
        """The whole optimizer state, keyed by parameter name, on rank 0; empty elsewhere."""
        state = get_optimizer_state_dict(self.model, self.optim_wrapper.optimizer, options=SAVE_OPTIONS)
        if self.optim_wrapper.base_param_settings is not None:
            state[_BASE_PARAM_SETTINGS] = self.optim_wrapper.base_param_settings
        return state

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False, revise_keys: list = ()) -> None:
        """Loads a whole state dict (every rank holds it) into this rank's shards.
        As the plain Runner: non-strict unless asked, keys that do not fit are logged."""
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, key): value for key, value in state_dict.items()}
        options = StateDictOptions(full_state_dict=True, strict=strict)
        result = set_model_state_dict(self.model, state_dict, options=options)
        if result.missing_keys or result.unexpected_keys:
            self.logger.warning(
                f"the checkpoint does not fit the model: missing keys {result.missing_keys}, "
                f"unexpected keys {result.unexpected_keys}"
            )

    def load_optim_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        settings = state_dict.pop(_BASE_PARAM_SETTINGS, None)
        params = [p for group in state_dict.get("param_groups", []) for p in group["params"]]
        if any(not isinstance(p, str) for p in params):
            raise ValueError(
                "the checkpoint's optimizer state is indexed by parameter number, as the plain Runner writes it; "
                "FullyShardStrategy resumes only its own checkpoints (keyed by parameter name). Resume it with the "
                "plain Runner (a config without runner_type and strategy), or start from its weights alone "
                "(load_from=FILE, resume=False)"
            )
        set_optimizer_state_dict(
            self.model, self.optim_wrapper.optimizer, state_dict, options=StateDictOptions(full_state_dict=True)
        )
        if settings is not None:
            self.optim_wrapper.base_param_settings = settings

    def load_checkpoint(self, filename: str, *, map_location="cpu", **kwargs) -> dict:
        # On the CPU: set_*_state_dict copy each rank's shard to its device; the whole
        # state need not pass through every GPU.
        return super().load_checkpoint(filename, map_location="cpu", **kwargs)

    def save_checkpoint(
        self,
        filename: str,
        *,
        save_optimizer: bool = True,
        save_param_scheduler: bool = True,
        extra_ckpt: dict | None = None,
        callback=None,
    ) -> None:
        """Every rank takes part in gathering the state; rank 0 writes the file
        atomically (a temporary file renamed over ``filename``)."""
        checkpoint = {"state_dict": self.model_state_dict()}
        if save_optimizer and hasattr(self, "optim_wrapper"):
            checkpoint["optimizer"] = self.optim_state_dict()
        if save_param_scheduler and hasattr(self, "param_schedulers"):
            checkpoint["param_schedulers"] = self.scheduler_state_dict()
        extra = dict(extra_ckpt or {})
        extra.setdefault("meta", {}).update(
            seed=self.seed,
            time=time.strftime("%Y%m%d_%H%M%S", time.localtime()),
            mmengine=mmengine.__version__ + get_git_hash(),
        )
        checkpoint.update(extra)
        if callback is not None:
            callback(checkpoint)  # before_save_checkpoint hooks, on every rank as with the plain Runner
        if is_main_process():
            save_checkpoint(checkpoint, filename, backend_args=dict(backend=ATOMIC_BACKEND))
