# MAE baseline counterpart of the tiny synthetic SdAE config.
_base_ = ["sdae_vit-tiny-p16_1xb32-10e_synthetic.py"]
model = dict(target="pixels", norm_pix_loss=True, teacher_input=None)
custom_hooks = []
