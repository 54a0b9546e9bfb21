"""Optimizer construction for models with frozen parts (EMA teacher, frozen backbone)."""

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (paramwise rules unchanged) that leaves
    out submodules with no trainable parameter at all, such as the EMA teacher,
    instead of adding them and warning once per frozen tensor."""

    def add_params(self, params: list, module: nn.Module, prefix: str = "", is_dcn_module=None) -> None:
        if any(p.requires_grad for p in module.parameters()):
            super().add_params(params, module, prefix, is_dcn_module)
