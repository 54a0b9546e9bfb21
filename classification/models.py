"""ViT classifiers on canonical backbones: MAE fine-tuning and linear probing, CAE attentive probing."""

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS
from timm.data import Mixup
from torch import nn

from pretrain.checkpoints import backbone_source, load_state_dict_strictly, pooled_norm

from .attentive import attentive_probe_head


def build_backbone(
    checkpoint: str | None,
    img_size: int,
    drop_path_rate: float = 0.0,
    arch: dict | None = None,
    expect: dict | None = None,
):
    """An encoder loaded strictly from a canonical file, or randomly initialised
    from ``arch`` (the random-init control). ``expect``: architecture fields the
    encoder must have (a recipe written for one size, e.g. ViT-L's layer decay and
    drop path, refuses a file of another). Returns (encoder, metadata)."""
    source = backbone_source(checkpoint, arch)
    wrong = {
        key: getattr(source.arch, key) for key, value in (expect or {}).items() if getattr(source.arch, key) != value
    }
    if wrong:
        raise ValueError(
            f"{checkpoint or 'model.backbone.arch'} is an encoder with {wrong}, but this recipe is written for "
            f"{ {key: expect[key] for key in wrong} }: give a backbone of that size, or use the recipe for this one"
        )
    encoder = source.arch.build(img_size=img_size, drop_path_rate=drop_path_rate)
    if source.state_dict:
        load_state_dict_strictly(encoder, source.state_dict, str(checkpoint))
    return encoder, source.metadata


@torch.no_grad()
def frozen_features(encoder: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """What MAE's linear probe reads of a frozen encoder: the class token after the
    final norm, or - for an encoder whose final norm acts on the mean patch token
    (``final_norm="mean_pooled"``: BEiT/MAE fine-tuned) - that normalised mean."""
    tokens = encoder.forward_tokens(encoder.embed_patches(imgs))
    norm = pooled_norm(encoder)
    return norm(tokens[:, 1:].mean(dim=1)) if norm is not None else tokens[:, 0]


@MODELS.register_module()
class MixupDataPreprocessor(BaseDataPreprocessor):
    """Moves the batch to the device and, in training, applies timm's Mixup/CutMix
    with label smoothing (targets become soft). ``mixup=None`` disables it."""

    def __init__(self, num_classes: int, mixup: dict | None = None, non_blocking: bool = True) -> None:
        super().__init__(non_blocking=non_blocking)
        self.mixup = Mixup(num_classes=num_classes, **mixup) if mixup else None

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        if training and self.mixup is not None:
            data["inputs"], data["data_samples"] = self.mixup(data["inputs"], data["data_samples"])
        return data


HEADS = ("finetune", "linear", "attentive")
FROZEN_HEADS = ("linear", "attentive")


@MODELS.register_module()
class ViTClassifier(BaseModel):
    """``head="finetune"``: MAE fine-tuning - average of the patch tokens (no final
    encoder norm), LayerNorm, linear head (init std 2e-5), whole network trained.
    ``head="linear"``: MAE linear probing - class token after the final norm,
    BatchNorm1d without affine, linear head (init std 0.01); the encoder is frozen
    and kept in eval mode. An encoder whose final norm acts on the mean patch token
    (``final_norm="mean_pooled"``: BEiT/MAE fine-tuned) gives that instead of the
    class token, and the fine-tuning LayerNorm starts from it.
    ``head="attentive"``: CAE attentive probing - one cross-attention block with a
    learnable query over all output tokens of the frozen encoder (class token and
    patch tokens, after the final norm; a mean-pooling encoder has none on its tokens,
    and the block's own key/value LayerNorms normalise them), BatchNorm1d without
    affine, linear head (:func:`classification.attentive.attentive_probe_head`); the
    encoder is frozen and kept in eval mode. The BatchNorm evaluates with its running
    statistics (CAE's released evaluation calls the model with its default
    ``is_train=True`` and so normalises each validation batch by its own statistics).

    ``backbone``: ``checkpoint`` (canonical file), ``img_size``, ``drop_path_rate``,
    or ``arch`` instead of ``checkpoint`` for a randomly initialised encoder;
    ``expect``: architecture fields the encoder must have (:func:`build_backbone`).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: dict,
        head: str = "finetune",
        label_smoothing: float = 0.0,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if data_preprocessor is None:
            data_preprocessor = dict(type="MixupDataPreprocessor", num_classes=num_classes)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone)
        self.backbone, self.backbone_meta = build_backbone(
            backbone.pop("checkpoint", None),
            backbone.pop("img_size", 224),
            backbone.pop("drop_path_rate", 0.0),
            backbone.pop("arch", None),
            backbone.pop("expect", None),
        )
        if backbone:
            raise ValueError(f"unknown model.backbone keys: {sorted(backbone)}")
        width = self.backbone.embed_dim
        self.head_type = head
        self.label_smoothing = label_smoothing
        self.fc_norm = None
        if head == "finetune":
            self.fc_norm = nn.LayerNorm(width, eps=1e-6)
            if pooled_norm(self.backbone) is not None:  # a mean-pooling encoder's own final norm: start from it
                self.fc_norm.load_state_dict(pooled_norm(self.backbone).state_dict())
            self.head = nn.Linear(width, num_classes)
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)
        elif head == "linear":
            self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), nn.Linear(width, num_classes))
            nn.init.trunc_normal_(self.head[1].weight, std=0.01)
            nn.init.zeros_(self.head[1].bias)
        else:  # CAE uses the encoder's number of heads for the probe's attention
            self.head = attentive_probe_head(width, self.backbone.blocks[0].attn.num_heads, num_classes)
        if head in FROZEN_HEADS:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "ViTClassifier":
        super().train(mode)
        if self.head_type in FROZEN_HEADS:
            self.backbone.eval()  # frozen features, as in MAE's linear and CAE's attentive probing
        return self

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        if self.head_type == "finetune":
            tokens = self.backbone.forward_tokens(self.backbone.embed_patches(imgs), final_norm=False)
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        if self.head_type == "attentive":  # the probe attends to every output token
            with torch.no_grad():
                return self.backbone.forward_tokens(self.backbone.embed_patches(imgs))
        return frozen_features(self.backbone, imgs)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "tensor"):
        logits = self.head(self.features(inputs))
        if mode == "tensor":
            return logits
        if mode == "loss":
            if data_samples.dim() == 2:  # soft targets from Mixup/CutMix
                loss = torch.sum(-data_samples * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            else:
                loss = F.cross_entropy(logits.float(), data_samples, label_smoothing=self.label_smoothing)
            return {"loss": loss}
        if mode == "predict":
            return [dict(scores=s, label=y) for s, y in zip(logits.float(), data_samples, strict=True)]
        raise ValueError(f"unknown mode {mode!r}")
