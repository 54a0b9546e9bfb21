# The lowshot recipe (../lowshot_vit-base-p16_in1k.py) on the real-image mini suite (tools/run_suite.py
# --preset real): a ViT-micro (patch 8) backbone at 64 px on the 8-material classification set,
# one process. Only data location, resolution and loader keys change (tests/test_real_suite.py).
_base_ = ["../lowshot_vit-base-p16_in1k.py"]
data_root = "data/realsuite/imagenet"
train_dataloader = dict(batch_size=128, num_workers=0, pin_memory=False, dataset=dict(data_root=data_root, img_size=64))
val_dataloader = dict(batch_size=128, num_workers=0, pin_memory=False, dataset=dict(data_root=data_root, img_size=64))
