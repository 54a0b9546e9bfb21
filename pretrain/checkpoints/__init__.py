"""Canonical backbone files and the converter from foreign checkpoint layouts."""

from .canonical import (
    BackboneArch,
    BackboneKeyError,
    CanonicalBackbone,
    NotCanonicalError,
    backbone_source,
    load_backbone_into,
    load_state_dict_strictly,
    read_backbone,
    read_metadata,
    save_backbone,
)
from .convert import (
    Conversion,
    UnknownCheckpointError,
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
    "NotCanonicalError",
    "UnknownCheckpointError",
    "UntrustedPickleError",
    "backbone_source",
    "convert",
    "detect_format",
    "load_backbone_into",
    "load_checkpoint_file",
    "load_state_dict_strictly",
    "read_backbone",
    "read_metadata",
    "save_backbone",
]
