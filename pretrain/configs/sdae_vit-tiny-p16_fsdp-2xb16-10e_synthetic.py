# The tiny SdAE demo (sdae_vit-tiny-p16_1xb32-10e_synthetic.py: same model, data,
# schedule and 32 images per step) trained with FSDP2 over 2 processes, on the CPU
# (gloo) or on 2 GPUs:  bash tools/dist_train.sh THIS 2
_base_ = ["sdae_vit-tiny-p16_1xb32-10e_synthetic.py"]
train_dataloader = dict(batch_size=16)
# mmengine's FlexibleRunner with pretrain/engine/fsdp.py's FullyShardStrategy: the
# student and decoder blocks are sharded one by one, the rest of student and decoder
# at the root; the EMA teacher stays whole on every rank, outside FSDP.
runner_type = "FlexibleRunner"
strategy = dict(type="FullyShardStrategy", unit_types=["Block"], replicated_modules=["sdae.teacher"])
