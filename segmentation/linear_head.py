"""DINOv2's linear segmentation head: BatchNorm + 1x1 convolution on frozen patch features.

The ADE20K "linear" protocol of DINOv2 (facebookresearch/dinov2,
``dinov2/eval/segmentation/models/decode_heads/linear_head.py``, ``BNHead``): the
patch tokens of the last block (``in_index=[3]`` of 4 taps), or of the last 4 blocks
concatenated along channels (the "+ms" variant, ``in_index=[0, 1, 2, 3]``), are
batch-normalised and classified per patch by one linear layer. The logits stay at
patch resolution; mmseg upsamples them bilinearly to the labels (loss) and the image
(inference). No class token: DINOv2's released ADE20K configs feed patch tokens only.
"""

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class LinearHead(BaseDecodeHead):
    """BatchNorm over the concatenated maps ``inputs[i] for i in in_index`` (in that
    order), then ``conv_seg`` (1x1, mmseg's classifier). ``channels`` must be the
    concatenated width; ``norm_cfg`` picks the BatchNorm (``SyncBN`` across GPUs as
    DINOv2, ``BN`` in one process); ``dropout_ratio=0`` as DINOv2."""

    def __init__(self, **kwargs) -> None:
        transform = kwargs.setdefault("input_transform", "resize_concat")
        if transform != "resize_concat" or not isinstance(kwargs.get("in_index"), list | tuple):
            raise ValueError(
                "LinearHead concatenates a list of tapped maps: give in_index as a list (e.g. [3] for the "
                f"last of 4 taps) and input_transform='resize_concat', got in_index={kwargs.get('in_index')!r}, "
                f"input_transform={transform!r}"
            )
        super().__init__(**kwargs)
        if self.channels != self.in_channels:
            raise ValueError(
                f"LinearHead classifies the concatenated features directly: channels must equal their width "
                f"sum(in_channels) = {self.in_channels}, got {self.channels}"
            )
        self.bn = build_norm_layer(self.norm_cfg or dict(type="BN"), self.in_channels)[1]

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
