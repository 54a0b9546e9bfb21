"""mmengine glue: importing this package registers the pretraining model, the
hooks, optimizer constructors, dataset and atomic checkpoint backend shared by
every stage."""

from pretrain.data import PretrainImageDataset

from .checkpoint import ATOMIC_BACKEND, AtomicLocalBackend, WeightsOnlyCheckpointHook
from .hooks import DeferredLossHook, RandomStateHook, TeacherEMAHook
from .model import DeviceLossBuffer, NonFiniteLossError, PretrainDataPreprocessor, SdAEPretrainer
from .optim import LarsOptimWrapperConstructor, LayerDecayOptimWrapperConstructor, TrainableOptimWrapperConstructor
from .results import ResultsRecordHook

__all__ = [
    "ATOMIC_BACKEND",
    "AtomicLocalBackend",
    "DeferredLossHook",
    "DeviceLossBuffer",
    "LarsOptimWrapperConstructor",
    "LayerDecayOptimWrapperConstructor",
    "NonFiniteLossError",
    "PretrainDataPreprocessor",
    "PretrainImageDataset",
    "RandomStateHook",
    "ResultsRecordHook",
    "SdAEPretrainer",
    "TeacherEMAHook",
    "TrainableOptimWrapperConstructor",
    "WeightsOnlyCheckpointHook",
]
