# The runtime of every pretraining config: the shared runtime (which the downstream
# stages inherit too) plus DeferredLossHook, which reads the pretraining model's
# on-device loss buffer: losses reach the log and the non-finite check in one transfer
# per log interval (with a fused optimizer; otherwise they are checked every iteration).
_base_ = ["default_runtime.py"]
default_hooks = dict(deferred_loss=dict(type="DeferredLossHook"))
