"""COCO detection and instance segmentation with Mask R-CNN + FPN on the dense
ViT backbone (``detection.engine`` registers it with mmdet)."""
