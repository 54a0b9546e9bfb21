# MAE baseline with everything else of the SdAE recipe: normalised-pixel
# targets, no teacher (so no EMA hook); same data, schedule, drop path, decoder.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-300e_in1k.py"]
model = dict(target="pixels", norm_pix_loss=True, teacher_input=None)
custom_hooks = []
