# mmdet runtime with the suite's checkpointing (atomic, weights-only loadable,
# random-state resume), TensorBoard and a results record per evaluation.
default_scope = "mmdet"
custom_imports = dict(imports=["detection.engine"], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
visualizer = dict(type="DetLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(type="LogProcessor", window_size=50, by_epoch=True)
log_level = "INFO"
load_from = None
resume = True
randomness = dict(seed=0, diff_rank_seed=True)
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(
        type="SafeCheckpointHook",
        interval=1,
        max_keep_ckpts=2,
        save_best="coco/bbox_mAP",
        rule="greater",
        backend_args=dict(backend="atomic_local"),
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="DetVisualizationHook"),
    random_state=dict(type="RandomStateHook"),
    weights_only=dict(type="WeightsOnlyCheckpointHook"),
    effective_batch=dict(type="EffectiveBatchHook"),
)
custom_hooks = [dict(type="ResultsRecordHook", task="coco")]
