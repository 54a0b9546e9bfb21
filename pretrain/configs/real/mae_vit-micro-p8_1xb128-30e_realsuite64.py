# MAE baseline counterpart of the real-suite SdAE config: same encoder, decoder, masking,
# data and schedule; the decoder regresses normalised pixels.
_base_ = ["sdae_vit-micro-p8_1xb128-30e_realsuite64.py"]
model = dict(target="pixels", norm_pix_loss=True, teacher_input=None)
custom_hooks = []
