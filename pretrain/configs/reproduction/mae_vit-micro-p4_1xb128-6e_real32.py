# MAE baseline counterpart of the small-scale SdAE config: same encoder, decoder,
# masking, data and schedule; the decoder regresses normalised pixels.
_base_ = ["sdae_vit-micro-p4_1xb128-6e_real32.py"]
model = dict(target="pixels", norm_pix_loss=True, teacher_input=None)
custom_hooks = []
