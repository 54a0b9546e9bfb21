"""Recognise a checkpoint's format from its keys and map its encoder to the
canonical backbone (timm key names).

Recognised layouts:

* ``sdae-suite``   - this project's mmengine training checkpoints
  (``state_dict`` with ``sdae.student.*`` / ``sdae.teacher.*``);
* ``official-sdae`` - AbrahamYabo/SdAE releases: ``model`` (student, MAE layout
  with a feature decoder) and ``model_teacher`` (timm ViT layout);
* ``official-mae`` - facebookresearch/mae: ``model`` with encoder keys at the
  top level, with or without ``decoder_*`` / ``mask_token``;
* ``beit``         - microsoft/unilm BEiT: ``model`` with ``attn.q_bias`` /
  ``gamma_1`` / relative position bias tables;
* ``cae``          - CAE: ``model`` with the BEiT-style encoder under ``encoder.``;
* ``timm``         - a bare timm ``VisionTransformer`` / ``Beit`` state dict.

Anything that is neither encoder nor a known pretraining-only part (decoders,
heads, mask tokens) is an error naming the keys.
"""

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pretrain.models.vit import VIT_ARCHS

from .canonical import BackboneArch, CanonicalBackbone, read_metadata

ENCODER_PATTERNS = [
    r"cls_token",
    r"pos_embed",
    r"patch_embed\.proj\.(weight|bias)",
    r"rel_pos_bias\.relative_position_bias_table",
    r"blocks\.\d+\.(norm1|norm2)\.(weight|bias)",
    r"blocks\.\d+\.attn\.qkv\.(weight|bias)",
    r"blocks\.\d+\.attn\.(q_bias|v_bias|relative_position_bias_table)",
    r"blocks\.\d+\.attn\.proj\.(weight|bias)",
    r"blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)",
    r"blocks\.\d+\.(gamma_1|gamma_2|ls1\.gamma|ls2\.gamma)",
    r"norm\.(weight|bias)",
]
ENCODER_KEY = re.compile("|".join(f"(?:{p})" for p in ENCODER_PATTERNS))
# Buffers recomputed from the grid, never learned.
DERIVED_KEY = re.compile(r"(.*\.)?(relative_position_index|k_bias)$")


class UnknownCheckpointError(ValueError):
    """The checkpoint's layout is not one the converter knows, or keys are left unmapped."""


class UntrustedPickleError(RuntimeError):
    """The file needs unpickling of non-tensor objects and the user did not trust it."""


@dataclass
class Conversion:
    backbone: CanonicalBackbone
    source_format: str
    dropped: dict[str, int] = field(default_factory=dict)  # dropped key prefix -> count

    def report(self) -> str:
        arch = self.backbone.arch
        lines = [
            f"format: {self.source_format} ({self.backbone.metadata.get('select', 'encoder')})",
            f"encoder: {len(self.backbone.state_dict)} tensors, ViT patch {arch.patch_size}, width "
            f"{arch.embed_dim}, depth {arch.depth}, heads {arch.num_heads}, grid {arch.grid}, qkv bias "
            f"{arch.qkv_bias}, layer scale {arch.layer_scale}, rel pos bias {arch.rel_pos_bias}, "
            f"abs pos embed {arch.abs_pos_embed}",
        ]
        if self.dropped:
            parts = ", ".join(f"{prefix} ({n})" for prefix, n in sorted(self.dropped.items()))
            lines.append(f"not part of the encoder, dropped: {parts}")
        return "\n".join(lines)


def load_checkpoint_file(path: str | Path, trust_pickle: bool = False) -> dict:
    """Read a .safetensors file or a torch checkpoint. Torch files load with
    ``weights_only=True``; one that needs arbitrary unpickling (official releases
    store an argparse Namespace) is refused unless ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {"__safetensors__": load_file(str(path)), "__metadata__": read_metadata(path)}
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{path} contains pickled Python objects besides tensors, which can run arbitrary code "
                f"when loaded ({str(err).splitlines()[0]}). If you trust where the file comes from, pass "
                "--trust-pickle (trust_pickle=True)."
            ) from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _split(state: dict, dropped_prefixes: tuple[str, ...]) -> tuple[dict, dict[str, int]]:
    """Encoder tensors, and counts of the known non-encoder keys; other keys are an error."""
    encoder, dropped, unknown = {}, {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            unknown.append(key)
        elif ENCODER_KEY.fullmatch(key):
            encoder[key] = value
        elif DERIVED_KEY.fullmatch(key):
            dropped["relative_position_index/k_bias (recomputed)"] = (
                dropped.get("relative_position_index/k_bias (recomputed)", 0) + 1
            )
        elif any(key.startswith(p) for p in dropped_prefixes):
            prefix = next(p for p in dropped_prefixes if key.startswith(p))
            dropped[prefix] = dropped.get(prefix, 0) + 1
        else:
            unknown.append(key)
    if unknown:
        raise UnknownCheckpointError(f"keys the converter cannot map to the encoder: {sorted(unknown)}")
    if not encoder:
        raise UnknownCheckpointError("no encoder keys found")
    return encoder, dropped


def infer_arch(state: dict, num_heads: int | None = None) -> BackboneArch:
    """Architecture from tensor names and shapes (heads from a relative position
    table when there is one, else the standard ViT sizes or ``num_heads``)."""
    proj = state["patch_embed.proj.weight"]
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    table = state.get(
        "rel_pos_bias.relative_position_bias_table", state.get("blocks.0.attn.relative_position_bias_table")
    )
    if "pos_embed" in state:
        side = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    elif table is not None:
        side = round(((table.shape[0] - 3) ** 0.5 + 1) / 2)
    else:
        raise UnknownCheckpointError("neither an absolute position embedding nor a relative position table")
    if table is not None:
        heads = table.shape[1]
    elif num_heads is not None:
        heads = num_heads
    else:
        known = {(a["embed_dim"], a["depth"]): a["num_heads"] for a in VIT_ARCHS.values()}
        if (embed_dim, depth) not in known:
            raise UnknownCheckpointError(
                f"width {embed_dim} / depth {depth} is not a standard ViT size; pass --num-heads"
            )
        heads = known[(embed_dim, depth)]
    if "blocks.0.attn.q_bias" in state:
        qkv_bias = "qv"
    elif "blocks.0.attn.qkv.bias" in state:
        qkv_bias = "qkv"
    else:
        qkv_bias = "none"
    if "rel_pos_bias.relative_position_bias_table" in state:
        rel = "shared"
    elif "blocks.0.attn.relative_position_bias_table" in state:
        rel = "per_block"
    else:
        rel = "none"
    return BackboneArch(
        patch_size=patch,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias=qkv_bias,
        layer_scale="blocks.0.gamma_1" in state or "blocks.0.ls1.gamma" in state,
        rel_pos_bias=rel,
        abs_pos_embed="pos_embed" in state,
        grid=(side, side),
        in_chans=in_chans,
    )


def detect_format(obj: dict) -> str:
    if "__safetensors__" in obj:
        meta = obj.get("__metadata__") or {}
        return "canonical" if meta.get("format") else "timm"
    if isinstance(obj.get("state_dict"), dict) and any(k.startswith("sdae.") for k in obj["state_dict"]):
        return "sdae-suite"
    model = obj.get("model")
    if isinstance(model, dict):
        if isinstance(obj.get("model_teacher"), dict):
            return "official-sdae"
        if any(k.startswith("encoder.blocks.") for k in model):
            return "cae"
        if "blocks.0.attn.q_bias" in model or "rel_pos_bias.relative_position_bias_table" in model:
            return "beit"
        if "blocks.0.attn.qkv.weight" in model:
            return "official-mae"
    if "blocks.0.attn.qkv.weight" in obj:
        return "timm"
    top = sorted(obj)[:12]
    raise UnknownCheckpointError(
        f"unrecognised checkpoint layout (top-level keys {top}); known: sdae-suite, official-sdae, "
        "official-mae, beit, cae, timm"
    )


MAE_DECODER = ("decoder_", "mask_token")


def convert(obj: dict, select: str = "student", num_heads: int | None = None) -> Conversion:
    """Map a loaded checkpoint to a canonical backbone. ``select`` picks the
    student or the EMA teacher of SdAE checkpoints."""
    if select not in ("student", "teacher"):
        raise ValueError(f"select must be 'student' or 'teacher', got {select!r}")
    fmt = detect_format(obj)
    if fmt == "canonical":
        raise UnknownCheckpointError("this is already a canonical backbone file")
    has_teacher = fmt in ("sdae-suite", "official-sdae")
    if select == "teacher" and not has_teacher:
        raise ValueError(f"a {fmt} checkpoint has no EMA teacher; use --select student")
    metadata: dict = {"source_format": fmt}
    if fmt == "sdae-suite":
        full = obj["state_dict"]
        if select == "teacher" and not any(k.startswith("sdae.teacher.") for k in full):
            raise ValueError("this checkpoint is the MAE baseline (target='pixels'): it has no teacher")
        part = _strip(full, f"sdae.{select}.")
        encoder, dropped = _split(part, ())
        others = {k.split(".")[1] for k in full if not k.startswith(f"sdae.{select}.")}
        dropped.update({f"sdae.{name}": sum(k.startswith(f"sdae.{name}.") for k in full) for name in others})
        meta = obj.get("meta", {})
        metadata["pretraining"] = {
            "method": "SdAE" if any(k.startswith("sdae.teacher.") for k in full) else "MAE",
            "epochs": meta.get("epoch"),
        }
        metadata["select"] = select
    elif fmt == "official-sdae":
        if select == "student":
            encoder, dropped = _split(obj["model"], MAE_DECODER)
        else:
            encoder, dropped = _split(obj["model_teacher"], ("head.", "fc_norm."))
        metadata["pretraining"] = {"method": "SdAE", "epochs": _epochs(obj)}
        metadata["select"] = select
    elif fmt == "official-mae":
        encoder, dropped = _split(obj["model"], MAE_DECODER)
        metadata["pretraining"] = {"method": "MAE", "epochs": _epochs(obj)}
    elif fmt == "beit":
        encoder, dropped = _split(obj["model"], ("mask_token", "lm_head.", "head.", "fc_norm."))
        metadata["pretraining"] = {"method": "BEiT", "epochs": _epochs(obj)}
    elif fmt == "cae":
        model = obj["model"]
        encoder, dropped = _split(_strip(model, "encoder."), ("mask_token",))
        for key in model:
            if not key.startswith("encoder."):
                prefix = key.split(".")[0]
                dropped[prefix] = dropped.get(prefix, 0) + 1
        metadata["pretraining"] = {"method": "CAE", "epochs": _epochs(obj)}
    else:  # timm
        state = obj.get("__safetensors__", obj)
        encoder, dropped = _split(state, ("head.", "fc_norm.", "head_drop."))
    arch = infer_arch(encoder, num_heads)
    return Conversion(CanonicalBackbone(encoder, arch, metadata), fmt, dropped)


def _epochs(obj: dict) -> int | None:
    epoch = obj.get("epoch")
    return epoch + 1 if isinstance(epoch, int) else None  # official scripts store the 0-based last epoch
