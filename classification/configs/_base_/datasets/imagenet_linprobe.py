_base_ = ["imagenet_finetune.py"]
train_dataloader = dict(batch_size=2048, dataset=dict(transform="linprobe"))
val_dataloader = dict(batch_size=256)
test_dataloader = dict(batch_size=256)
