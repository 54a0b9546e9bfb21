"""ImageNet-1k evaluation of ViT backbones under the MAE protocol: fine-tuning
and linear probing on canonical backbone files (``classification.engine``
registers the pieces with mmengine)."""
