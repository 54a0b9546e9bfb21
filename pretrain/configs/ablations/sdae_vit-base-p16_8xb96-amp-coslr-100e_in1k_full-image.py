# Paper Table 5, row "full image + teacher normalisation" (84.0): the teacher sees
# all 196 patches. Loss along the token axis like every other variant here;
# add model.loss_axis="feature" for the published full-image code path.
_base_ = ["../sdae_vit-base-p16_8xb96-amp-coslr-100e_in1k.py"]
model = dict(teacher_input=dict(_delete_=True, kind="full_image"))
