# mmseg runtime with the suite's checkpointing (atomic, weights-only loadable,
# random-state resume), TensorBoard and a results record per evaluation.
default_scope = "mmseg"
custom_imports = dict(imports=["segmentation.engine"], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = True
randomness = dict(seed=0, diff_rank_seed=True)
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(
        type="SafeCheckpointHook",
        by_epoch=False,
        interval=16000,
        max_keep_ckpts=2,
        save_best="mIoU",
        rule="greater",
        backend_args=dict(backend="atomic_local"),
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
    random_state=dict(type="RandomStateHook"),
    weights_only=dict(type="WeightsOnlyCheckpointHook"),
    effective_batch=dict(type="EffectiveBatchHook"),
)
custom_hooks = [dict(type="ResultsRecordHook", task="ade20k")]
# what tools/test.py --tta wraps the model in: the mean softmax over tta_pipeline's passes
tta_model = dict(type="SegTTAModel")
