# Paper Table 5, row "full image" without teacher normalisation (83.7).
_base_ = ["sdae_vit-base-p16_8xb96-amp-coslr-100e_in1k_full-image.py"]
model = dict(normalize_target=False)
