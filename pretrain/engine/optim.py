"""Optimizer constructors shared by every stage: frozen-part handling, layer-wise
learning-rate decay (timm's parameter groups) and MAE's LARS grouping."""

import re

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from timm.optim import Lars
from timm.optim._param_groups import param_groups_layer_decay
from torch import nn

OPTIMIZERS.register_module(name="Lars", module=Lars)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (paramwise rules unchanged) that leaves
    out submodules with no trainable parameter at all, such as the EMA teacher,
    instead of adding them and warning once per frozen tensor."""

    def add_params(self, params: list, module: nn.Module, prefix: str = "", is_dcn_module=None) -> None:
        if any(p.requires_grad for p in module.parameters()):
            super().add_params(params, module, prefix, is_dcn_module)


class _LayerGrouping:
    """What timm's ``param_groups_layer_decay`` asks of a model - its parameters
    and a ``group_matcher`` - for a ViT found under ``prefix`` in any model
    (a classifier, an mmseg segmentor, an mmdet detector)."""

    def __init__(self, model: nn.Module, prefix: str) -> None:
        self.model = model
        p = re.escape(prefix)
        self.matcher = dict(
            stem=rf"^{p}(?:cls_token|pos_embed|patch_embed|rel_pos_bias)",  # no groups: timm sorts on them
            blocks=[(rf"^{p}blocks\.(\d+)", None)],
        )  # anything else (final norm, necks, heads) is the top layer, scale 1

    def named_parameters(self, *args, **kwargs):
        return self.model.named_parameters(*args, **kwargs)

    def group_matcher(self, coarse: bool = False) -> dict:
        return self.matcher


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor:
    """Layer-wise lr decay for a ViT encoder: the embeddings get ``decay ** (depth + 1)``,
    block i ``decay ** (depth - i)``, everything above the last block 1.0 (BEiT / MAE).
    No weight decay on 1-D parameters and on ``no_weight_decay`` names.

    ``paramwise_cfg``: ``layer_decay`` (e.g. 0.65), ``backbone_prefix`` (where the
    encoder sits in the model, default ``"backbone."``), ``no_weight_decay``
    (parameter-name fragments; default position embedding, class token and
    relative position tables, as MAE / BEiT).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = self.optim_wrapper_cfg.pop("optimizer")
        cfg = dict(paramwise_cfg or {})
        if "layer_decay" not in cfg:
            raise ValueError("LayerDecayOptimWrapperConstructor needs paramwise_cfg.layer_decay")
        self.layer_decay = cfg.pop("layer_decay")
        self.prefix = cfg.pop("backbone_prefix", "backbone.")
        default = ("pos_embed", "cls_token", "relative_position_bias_table")
        self.no_weight_decay = tuple(cfg.pop("no_weight_decay", default))
        if cfg:
            raise ValueError(f"unknown paramwise_cfg keys for layer decay: {sorted(cfg)}")

    def param_groups(self, model: nn.Module) -> list[dict]:
        base_lr = self.optimizer_cfg["lr"]
        patterns = [f"*{n}*" for n in self.no_weight_decay]  # timm matches names with fnmatch
        groups = param_groups_layer_decay(
            _LayerGrouping(model, self.prefix),
            weight_decay=self.optimizer_cfg.get("weight_decay", 0.0),
            no_weight_decay_list=patterns,
            layer_decay=self.layer_decay,
        )
        for group in groups:
            group["lr"] = base_lr * group.pop("lr_scale")  # mmengine schedulers scale each group's lr
        return groups

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, "module", model)
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, "params": self.param_groups(model)})
        wrapper = {"type": "OptimWrapper", **self.optim_wrapper_cfg}
        return OPTIM_WRAPPERS.build(wrapper, default_args=dict(optimizer=optimizer))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LarsOptimWrapperConstructor:
    """MAE's linear-probe LARS: the trust-ratio adaptation applies to parameters
    with more than one dimension only (weights, not biases), weight decay as given."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if paramwise_cfg:
            raise ValueError("LarsOptimWrapperConstructor takes no paramwise_cfg")
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = self.optim_wrapper_cfg.pop("optimizer")

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, "module", model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [
            dict(params=[p for p in trainable if p.ndim > 1], always_adapt=True),
            dict(params=[p for p in trainable if p.ndim <= 1], always_adapt=False, weight_decay=0.0),
        ]
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, "params": [g for g in groups if g["params"]]})
        wrapper = {"type": "OptimWrapper", **self.optim_wrapper_cfg}
        return OPTIM_WRAPPERS.build(wrapper, default_args=dict(optimizer=optimizer))
