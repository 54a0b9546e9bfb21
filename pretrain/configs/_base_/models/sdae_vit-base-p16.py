# SdAE ViT-B/16 as published: 75% masking, 8x512 decoder regressing teacher
# features, teacher fed 3 folds of 49 masked patches, per-token normalised
# targets, cosine loss along the token axis.
model = dict(
    type="SdAEPretrainer",
    arch="base",
    img_size=224,
    drop_path_rate=0.25,
    mask_ratio=0.75,
    decoder=dict(embed_dim=512, depth=8, num_heads=16),
    target="teacher",
    teacher_input=dict(kind="multi_fold", num_tokens=147, num_folds=3),
    teacher_init="random",
    normalize_target=True,
    loss_axis="token",
)
# Teacher EMA once per epoch, momentum cosine 0.96 -> 0.99.
custom_hooks = [dict(type="TeacherEMAHook", interval="epoch", momentum=0.96, final_momentum=0.99)]
