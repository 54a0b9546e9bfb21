# Paper Table 5, row "only masked + teacher normalisation" (83.5): all 147
# masked patches in one teacher sequence.
_base_ = ["../sdae_vit-base-p16_8xb96-amp-coslr-100e_in1k.py"]
model = dict(teacher_input=dict(_delete_=True, kind="masked"))
