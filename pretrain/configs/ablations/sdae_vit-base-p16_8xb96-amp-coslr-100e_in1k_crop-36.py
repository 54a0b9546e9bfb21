# Paper Fig. 4b, teacher crop: 36 of the 147 masked patches in one sequence
# (82.81). Other crops: --cfg-options model.teacher_input.num_tokens=49|79|122|147.
_base_ = ["../sdae_vit-base-p16_8xb96-amp-coslr-100e_in1k.py"]
model = dict(teacher_input=dict(_delete_=True, kind="crop", num_tokens=36))
