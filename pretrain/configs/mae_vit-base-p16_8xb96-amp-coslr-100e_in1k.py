# MAE baseline counterpart of the 100-epoch SdAE config.
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-100e_in1k.py"]
model = dict(target="pixels", norm_pix_loss=True, teacher_input=None)
custom_hooks = []
