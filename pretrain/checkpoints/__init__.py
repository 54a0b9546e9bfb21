"""Canonical backbone files and the converter from foreign checkpoint layouts."""

from .canonical import (
    BackboneArch,
    BackboneKeyError,
    CanonicalBackbone,
    NotCanonicalError,
    backbone_source,
    check_complete_encoder,
    load_backbone_into,
    load_state_dict_strictly,
    pooled_norm,
    read_backbone,
    read_metadata,
    save_backbone,
)
from .convert import (
    Conversion,
    HeadCountError,
    UnknownCheckpointError,
    UnreadableCheckpointError,
    UntrustedPickleError,
    convert,
    detect_format,
    load_checkpoint_file,
)

__all__ = [
    "BackboneArch",
    "BackboneKeyError",
    "CanonicalBackbone",
    "Conversion",
    "HeadCountError",
    "NotCanonicalError",
    "UnknownCheckpointError",
    "UnreadableCheckpointError",
    "UntrustedPickleError",
    "backbone_source",
    "check_complete_encoder",
    "convert",
    "detect_format",
    "load_backbone_into",
    "load_checkpoint_file",
    "load_state_dict_strictly",
    "pooled_norm",
    "read_backbone",
    "read_metadata",
    "save_backbone",
]
