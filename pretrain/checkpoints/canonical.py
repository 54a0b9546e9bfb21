"""The canonical backbone file: one safetensors file holding the encoder weights
(timm key names) and, in its header, JSON metadata describing the architecture
and where the weights came from. Every downstream stage loads only these files,
strictly."""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pretrain.models.pos_embed import resize_pos_embed
from pretrain.models.vit import VisionTransformer

FORMAT = "sdae-suite/vit-backbone"
FORMAT_VERSION = 1
METADATA_KEY = "sdae_suite"
FINAL_NORMS = ("tokens", "mean_pooled")


class BackboneKeyError(KeyError):
    """A state dict and a model disagree on parameter names or shapes."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class NotCanonicalError(ValueError):
    """The file is not a canonical backbone file."""


@dataclass(frozen=True)
class BackboneArch:
    """Everything needed to rebuild the encoder the weights belong to."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: str = "qkv"  # "qkv" (ViT/MAE), "qv" (BEiT/CAE: no key bias), "none"
    layer_scale: bool = False
    rel_pos_bias: str = "none"  # "none", "shared" (one table for all blocks), "per_block"
    abs_pos_embed: bool = True
    grid: tuple[int, int] = (14, 14)  # patch grid of the stored position embedding / bias tables
    in_chans: int = 3
    # Where the encoder's final LayerNorm acts: "tokens" - on every token (``norm``; timm
    # global_pool="token", MAE/SdAE pretraining, BEiT with a class-token head); "mean_pooled" -
    # on the mean of the patch tokens only (``fc_norm``; timm global_pool="avg", BEiT and MAE
    # fine-tuned with mean pooling), the tokens themselves see no final norm.
    final_norm: str = "tokens"

    @classmethod
    def from_dict(cls, values: dict) -> "BackboneArch":
        """From JSON metadata or a config dict (``grid`` may be a list; default 14x14)."""
        return cls(**{**values, "grid": tuple(values.get("grid", (14, 14)))})

    def build(self, img_size: int | None = None, drop_path_rate: float = 0.0, **overrides) -> VisionTransformer:
        """An encoder with this architecture; ``img_size`` defaults to the stored grid.
        The position embedding is trainable (fine-tuning trains it, as MAE does).
        ``overrides`` replace VisionTransformer arguments (dense backbones add
        relative position bias or layer scale).

        A ``final_norm="mean_pooled"`` encoder has ``norm`` = identity and its LayerNorm
        as ``fc_norm``, which consumers apply to the mean patch token (timm's layout and
        semantics for global_pool="avg")."""
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {self.final_norm!r}")
        kwargs = dict(
            img_size=img_size or self.grid[0] * self.patch_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            drop_path_rate=drop_path_rate,
            pos_embed="learned" if self.abs_pos_embed else "none",
            layer_scale=1.0 if self.layer_scale else None,  # overwritten by the loaded values
            rel_pos_bias=self.rel_pos_bias,
        )
        model = VisionTransformer(**{**kwargs, **overrides})
        if self.final_norm == "mean_pooled":
            model.fc_norm = model.norm
            model.norm = nn.Identity()
        return model


def pooled_norm(encoder: nn.Module) -> nn.Module | None:
    """The LayerNorm a ``final_norm="mean_pooled"`` encoder applies to its mean patch
    token, or None for encoders whose final norm acts on every token."""
    return getattr(encoder, "fc_norm", None)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class CanonicalBackbone:
    state_dict: dict[str, torch.Tensor]
    arch: BackboneArch
    metadata: dict = field(default_factory=dict)


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of the weights: names, dtypes, shapes and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_backbone(path: str | Path, backbone: CanonicalBackbone) -> dict:
    """Write a canonical file; returns the metadata written."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict.items()}
    metadata = {
        **backbone.metadata,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": {**asdict(backbone.arch), "grid": list(backbone.arch.grid)},
        "weights_sha256": weights_sha256(tensors),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return metadata


def read_metadata(path: str | Path) -> dict | None:
    """The suite's metadata of a safetensors file, or None if it has none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:  # safetensors raises its own error type for damaged headers
        raise NotCanonicalError(
            f"{path} cannot be read as safetensors ({str(err).splitlines()[0]}): truncated or damaged? "
            "copy or convert it again"
        ) from None
    return None if raw is None else json.loads(raw)


def read_backbone(path: str | Path) -> CanonicalBackbone:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise NotCanonicalError(
            f"{path} is not a canonical backbone file (.safetensors); convert it first: "
            f"python tools/convert_checkpoint.py {path} OUT.safetensors"
        )
    metadata = read_metadata(path)
    if metadata is None or metadata.get("format") != FORMAT:
        raise NotCanonicalError(f"{path} has no {FORMAT} metadata; convert it with tools/convert_checkpoint.py")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise NotCanonicalError(f"{path}: format version {metadata.get('format_version')} is not {FORMAT_VERSION}")
    try:
        with safe_open(str(path), framework="pt") as f:
            state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except Exception as err:
        raise NotCanonicalError(
            f"{path}: its tensors cannot be read ({str(err).splitlines()[0]}); convert it again"
        ) from None
    if weights_sha256(state_dict) != metadata["weights_sha256"]:
        raise NotCanonicalError(f"{path}: weights do not match the sha256 in the metadata (file corrupted?)")
    return CanonicalBackbone(state_dict, BackboneArch.from_dict(metadata["arch"]), metadata)


def key_differences(
    expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], optional: frozenset[str] = frozenset()
) -> tuple[list[str], list[str], list[str]]:
    """Keys of ``expected`` absent from ``state_dict`` (but ``optional``), keys it does
    not expect, and ``"key: file (shape) vs model (shape)"`` for shared keys whose shapes differ."""
    missing = sorted(expected.keys() - state_dict.keys() - optional)
    unexpected = sorted(state_dict.keys() - expected.keys())
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected.keys() & state_dict.keys()
        if state_dict[k].shape != expected[k].shape
    )
    return missing, unexpected, mismatched


def check_complete_encoder(state_dict: dict[str, torch.Tensor], arch: BackboneArch, source: str) -> None:
    """Raise :class:`BackboneKeyError` unless ``state_dict`` is exactly the encoder ``arch``
    builds: every key present, no other key, every shape right. The encoder is built
    on the meta device, so this costs no memory whatever its size."""
    with torch.device("meta"):
        expected = arch.build().state_dict()
    missing, unexpected, mismatched = key_differences(expected, state_dict)
    if missing or unexpected or mismatched:
        parts = [
            f"{what} {_first(keys)}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
            if keys
        ]
        raise BackboneKeyError(
            f"{source} is not a complete encoder of the architecture its weights imply "
            f"(width {arch.embed_dim}, depth {arch.depth}, patch {arch.patch_size}, grid {arch.grid}): "
            + "; ".join(parts)
        )


def _first(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}]" + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_strictly(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    new_keys: frozenset[str] = frozenset(),
) -> None:
    """Load every parameter or fail with the names: no silent partial loads.
    ``new_keys`` are parameters the model adds on purpose (e.g. zero-initialised
    relative position tables) and may be absent from the file. A square absolute
    position embedding is resized to the model's grid."""
    expected = model.state_dict()
    state_dict = dict(state_dict)
    if "pos_embed" in state_dict and "pos_embed" in expected:
        grid = getattr(model, "grid_size", None)
        if grid is not None and state_dict["pos_embed"].shape != expected["pos_embed"].shape:
            state_dict["pos_embed"] = resize_pos_embed(state_dict["pos_embed"], grid)
    missing, unexpected, mismatched = key_differences(expected, state_dict, new_keys)
    if missing or unexpected or mismatched:
        raise BackboneKeyError(
            f"{source} does not fit the encoder: missing keys {missing}; unexpected keys {unexpected}; "
            f"shape mismatches {mismatched}"
        )
    model.load_state_dict(state_dict, strict=not new_keys)


def backbone_source(checkpoint: str | Path | None, arch: dict | None = None) -> CanonicalBackbone:
    """What a downstream model starts from: a canonical file, read and verified once
    (metadata gains its ``file``), or - without a file - ``arch`` alone for a
    random-init control (no weights, metadata ``random_init``)."""
    if checkpoint:
        backbone = read_backbone(checkpoint)
        backbone.metadata = backbone.metadata | {"file": str(checkpoint)}
        return backbone
    if arch is None:
        raise ValueError(
            "no backbone: set model.backbone.checkpoint to a canonical .safetensors file "
            "(tools/train.py --backbone FILE), or model.backbone.arch for a random-init control"
        )
    return CanonicalBackbone({}, BackboneArch.from_dict(arch), {"random_init": True})


def load_backbone_into(model: torch.nn.Module, path: str | Path) -> CanonicalBackbone:
    """Strictly load a canonical file into ``model`` (an encoder with timm key names)."""
    backbone = read_backbone(path)
    load_state_dict_strictly(model, backbone.state_dict, str(path))
    return backbone
