# The published SdAE recipe: ViT-B/16, ImageNet-1k, 300 epochs, 8 GPUs x 96 = 768.
_base_ = [
    "_base_/models/sdae_vit-base-p16.py",
    "_base_/datasets/imagenet_pretrain.py",
    "_base_/schedules/adamw_coslr_300e.py",
    "_base_/pretrain_runtime.py",
]
# bf16 autocast without loss scaling (bf16 has float32's exponent range; fp16 with
# dynamic loss scaling: tools/train.py --amp fp16) and fused AdamW: one kernel for
# the update, and it skips a step on the device after a non-finite loss, so the
# step needs no host synchronisation (DeferredLossHook).
optim_wrapper = dict(
    type="AmpOptimWrapper", dtype="bfloat16", loss_scale=dict(enabled=False), optimizer=dict(fused=True)
)
