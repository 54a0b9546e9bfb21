# Runtime shared by every pretraining config.
default_scope = None
custom_imports = dict(imports=["pretrain.engine"], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type="RuntimeInfoHook"),
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    # Atomic writes: a crash while saving never leaves a truncated checkpoint; outdated
    # checkpoints are removed only after the new one and last_checkpoint are complete.
    checkpoint=dict(type="SafeCheckpointHook", interval=1, max_keep_ckpts=3, backend_args=dict(backend="atomic_local")),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    # Restores every rank's random state on resume (masks and crops continue exactly).
    random_state=dict(type="RandomStateHook"),
    # Checkpoints hold only tensors and builtin containers: resumable under
    # torch's weights_only=True loading without unpickling any class.
    weights_only=dict(type="WeightsOnlyCheckpointHook"),
    # Refuses to resume with another effective batch than the checkpoint was trained with.
    effective_batch=dict(type="EffectiveBatchHook"),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
visualizer = dict(type="Visualizer", vis_backends=vis_backends)
log_processor = dict(window_size=10, by_epoch=True)
log_level = "INFO"
load_from = None
# Continue from work_dir/last_checkpoint when there is one (tools/train.py --no-resume to start over).
resume = True
# Different seed per rank, as the published code (seed + rank).
randomness = dict(seed=0, diff_rank_seed=True)
