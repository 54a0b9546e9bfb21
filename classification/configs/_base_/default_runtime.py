# The pretraining runtime (atomic, weights-only checkpoints, random-state resume,
# TensorBoard) plus the classification registrations and a results record.
_base_ = ["../../../pretrain/configs/_base_/default_runtime.py"]
custom_imports = dict(imports=["classification.engine"], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2, save_best="top1", rule="greater"))
custom_hooks = [dict(type="ResultsRecordHook", task="imagenet")]
