# Mask R-CNN + FPN on the dense ViT-B/16, CAE recipe: global attention in every
# block, absolute position embedding interpolated to each (padded, non-square)
# input, no relative bias, layer scale 0.1, drop path 0.2, taps 3/5/7/11 through
# the 4-level pyramid into FPN; 4 shared convs + 1 fc box head with SyncBN and
# GIoU loss (weight 10) on decoded boxes; 4-conv mask head.
_base_ = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py"]
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type="DenseViT",
        checkpoint=None,  # tools/train.py --backbone FILE.safetensors
        img_size=224,  # grid of the stored position embedding; inputs may be any size
        out_indices=(3, 5, 7, 11),
        rel_pos_bias="none",
        layer_scale_init=0.1,
        drop_path_rate=0.2,
        norm="SyncBN",
        with_cp=False,
    ),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=256, num_outs=5),
    roi_head=dict(
        bbox_head=dict(
            _delete_=True,
            type="Shared4Conv1FCBBoxHead",
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            norm_cfg=norm_cfg,
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=10.0),
        ),
        mask_head=dict(num_convs=4, num_classes=80),
    ),
)
