"""mmengine glue: importing this package registers the pretraining model, the
hooks, train loop, sampler, optimizer constructors, dataset, atomic
checkpoint backend and FSDP strategy shared by every stage."""

from pretrain.data import PretrainImageDataset
from pretrain.data.sampler import ResumableSampler

from .checkpoint import ATOMIC_BACKEND, AtomicLocalBackend, SafeCheckpointHook, WeightsOnlyCheckpointHook
from .fsdp import FullyShardStrategy
from .hooks import DeferredLossHook, EffectiveBatchHook, RandomStateHook, TeacherEMAHook
from .loops import ResumableEpochBasedTrainLoop
from .model import DeviceLossBuffer, NonFiniteLossError, PretrainDataPreprocessor, SdAEPretrainer
from .optim import LarsOptimWrapperConstructor, LayerDecayOptimWrapperConstructor, TrainableOptimWrapperConstructor
from .results import ResultsRecordHook
from .shard_hook import ShardedDataHook

__all__ = [
    "ATOMIC_BACKEND",
    "AtomicLocalBackend",
    "DeferredLossHook",
    "DeviceLossBuffer",
    "EffectiveBatchHook",
    "FullyShardStrategy",
    "LarsOptimWrapperConstructor",
    "LayerDecayOptimWrapperConstructor",
    "NonFiniteLossError",
    "PretrainDataPreprocessor",
    "PretrainImageDataset",
    "RandomStateHook",
    "ResultsRecordHook",
    "ResumableEpochBasedTrainLoop",
    "ResumableSampler",
    "SafeCheckpointHook",
    "SdAEPretrainer",
    "ShardedDataHook",
    "TeacherEMAHook",
    "TrainableOptimWrapperConstructor",
    "WeightsOnlyCheckpointHook",
]
