"""ADE20K semantic segmentation with UperNet on the dense ViT backbone
(``segmentation.engine`` registers it with mmseg)."""
