"""mmengine glue: importing this package registers the pretraining model, its
hooks, the dataset and the atomic checkpoint backend with mmengine."""

from pretrain.data import PretrainImageDataset

from .checkpoint import ATOMIC_BACKEND, AtomicLocalBackend, WeightsOnlyCheckpointHook
from .hooks import RandomStateHook, TeacherEMAHook
from .model import NonFiniteLossError, SdAEPretrainer
from .optim import TrainableOptimWrapperConstructor

__all__ = [
    "ATOMIC_BACKEND",
    "AtomicLocalBackend",
    "NonFiniteLossError",
    "PretrainImageDataset",
    "RandomStateHook",
    "SdAEPretrainer",
    "TeacherEMAHook",
    "TrainableOptimWrapperConstructor",
    "WeightsOnlyCheckpointHook",
]
