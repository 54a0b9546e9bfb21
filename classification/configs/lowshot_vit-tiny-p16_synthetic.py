# The lowshot recipe (lowshot_vit-base-p16_in1k.py) on the generated ImageNet-layout data
# (tools/generate_datasets.py; 8 classes), ViT-tiny at 96 px, CPU, one process.
_base_ = ["lowshot_vit-base-p16_in1k.py"]
data_root = "data/synthetic_imagenet"
train_dataloader = dict(batch_size=64, num_workers=0, pin_memory=False, dataset=dict(data_root=data_root, img_size=96))
val_dataloader = dict(batch_size=64, num_workers=0, pin_memory=False, dataset=dict(data_root=data_root, img_size=96))
