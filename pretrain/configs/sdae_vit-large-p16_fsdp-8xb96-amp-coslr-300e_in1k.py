# SdAE ViT-L/16 on ImageNet-1k, 300 epochs, 8 GPUs x 96 = 768, bf16, FSDP2:
#   bash tools/dist_train.sh THIS 8
# The paper publishes ViT-B only; this is its recipe (sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py:
# masking, 8x512 decoder, 3 folds of 49 teacher tokens, per-epoch EMA 0.96 -> 0.99, AdamW,
# lr 2.666e-4 x batch / 256, 60 warm-up epochs, drop path 0.25) with a ViT-L/16 student and
# teacher (the decoder then predicts 1024-d teacher features). MAE pretrains ViT-L with the
# ViT-B decoder and schedule too.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
model = dict(arch="large")
# FlexibleRunner + FullyShardStrategy (pretrain/engine/fsdp.py): each of the 24 student and
# 8 decoder blocks is its own FSDP unit, the embeddings, norms and heads one more; parameters,
# gradients and AdamW state are split over the GPUs. The EMA teacher (304 M parameters, no
# gradient, no optimizer state) stays whole on every GPU, outside FSDP: the EMA writes it
# on every rank from the gathered student.
runner_type = "FlexibleRunner"
strategy = dict(type="FullyShardStrategy", unit_types=["Block"], replicated_modules=["sdae.teacher"])
