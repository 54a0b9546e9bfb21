"""Recognise a checkpoint's layout from its keys and map its encoder to the
canonical backbone (timm key names).

Recognised layouts (``source_format``), the encoder each holds, and what is dropped:

* ``sdae-suite``   - this project's mmengine training checkpoints (``state_dict`` with
  ``sdae.student.*`` / ``sdae.teacher.*``): student (default) or EMA teacher; the
  decoder and the other encoder are dropped;
* ``official-sdae`` - SdAE releases: ``model`` (student, MAE layout with a feature
  decoder) and ``model_teacher`` (timm ViT layout with a classifier head). A
  single-GPU run of the official code saves the student under ``model_teacher``
  too (``main_pretrain.py`` sets ``model_teacher_without_ddp = model``): such a file
  has no teacher;
* ``official-mae`` - facebookresearch/mae ``model``: encoder keys at the top level,
  with ``decoder_*`` / ``mask_token`` (pretraining) or ``fc_norm`` + ``head`` (fine-tuned);
* ``beit``         - microsoft/unilm BEiT (v1/v2) ``model``: ``attn.q_bias``,
  ``gamma_1``, relative position tables; MIM / classifier heads dropped;
* ``cae``          - CAE ``model`` with the BEiT-style encoder under ``encoder.``;
* ``moco-v3``      - facebookresearch/moco-v3 ``state_dict`` with
  ``module.base_encoder.*`` (default) / ``module.momentum_encoder.*``; projection
  head and predictor dropped;
* ``dino`` / ``ibot`` / ``dinov2`` - ``teacher`` (default, as their evaluations) or
  ``student`` with ``backbone.*``; projection heads and mask embeddings dropped;
  DINOv2's chunked blocks (``blocks.C.N``) are flattened;
* ``dinov2``       - also DINOv2's released backbone files (bare, ``ls1.gamma``,
  ``mask_token``);
* ``mmpretrain``   - mmpretrain / mmselfsup ``state_dict`` with ``backbone.*`` in
  OpenMMLab names (``layers.N.ln1``, ``ffn.layers.0.0``, ``patch_embed.projection``,
  final ``ln1`` on every token or ``ln2`` on the mean patch token); neck, heads,
  target generators, momentum encoders and teachers dropped;
* ``timm``         - a bare timm ``VisionTransformer`` / ``Beit`` state dict
  (``.pth`` or ``.safetensors``); classifier head dropped.

A final LayerNorm on the mean patch token (``fc_norm`` without ``norm``: BEiT's and
MAE's mean-pooling fine-tuning, timm ``global_pool="avg"``) is kept as ``fc_norm``,
and the arch records ``final_norm="mean_pooled"``.

Attention heads cannot be read from weight shapes (``qkv`` is 3*width x width for
any head count). They come, in this order, from a relative position table (one
column per head), the file's own record (``args.model`` / ``args.arch`` / ``arch``
/ mmengine ``meta.cfg``), the table of sizes of the code that writes the layout
(CAE and MoCo v3 build ViT-S with 12 heads, DeiT/MAE/timm with 6), and otherwise
``num_heads``. A ``num_heads`` that contradicts the file or its code is refused;
only for layouts many codebases share (bare timm, MAE) may it override the
standard table, and only at the widths where codebases disagree.

Every conversion ends with a completeness check: the encoder the inferred
architecture builds must have exactly the converted keys, with the same shapes.
Anything that is neither encoder nor a known pretraining-only part is an error
naming the keys.
"""

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pretrain.models.vit import VIT_ARCHS

from .canonical import BackboneArch, BackboneKeyError, CanonicalBackbone, check_complete_encoder, read_metadata

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
    r"fc_norm\.(weight|bias)",
]
ENCODER_KEY = re.compile("|".join(f"(?:{p})" for p in ENCODER_PATTERNS))
# Buffers recomputed from the grid, never learned.
DERIVED_KEY = re.compile(r"(.*\.)?(relative_position_index|k_bias)$")
DERIVED = "relative_position_index/k_bias (recomputed)"

FORMATS = (
    "sdae-suite",
    "official-sdae",
    "official-mae",
    "beit",
    "cae",
    "moco-v3",
    "dino",
    "ibot",
    "dinov2",
    "mmpretrain",
    "timm",
)
# Formats that hold two encoders, and which one their own evaluations use.
DEFAULT_SELECT = {
    "sdae-suite": "student",  # the paper fine-tunes the student
    "official-sdae": "student",
    "moco-v3": "student",  # base encoder (main_lincls.py); teacher = momentum encoder
    "dino": "teacher",  # eval_linear.py --checkpoint_key teacher
    "ibot": "teacher",
    "dinov2": "teacher",
}


class UnknownCheckpointError(ValueError):
    """The checkpoint cannot be converted: unknown layout, keys left unmapped, an
    incomplete or mis-shaped encoder, or an architecture the suite's ViT cannot express."""


class HeadCountError(UnknownCheckpointError):
    """The number of attention heads is undetermined or contradicted."""


class UnreadableCheckpointError(ValueError):
    """The file is not a readable checkpoint (truncated, damaged, not a checkpoint at all)."""


class UntrustedPickleError(RuntimeError):
    """The file needs unpickling of non-tensor objects and the user did not trust it."""


@dataclass
class Conversion:
    backbone: CanonicalBackbone
    source_format: str
    dropped: dict[str, int] = field(default_factory=dict)  # dropped key prefix -> count

    def report(self) -> str:
        arch, meta = self.backbone.arch, self.backbone.metadata
        lines = [
            f"format: {self.source_format} ({meta.get('select', 'encoder')})",
            f"encoder: {len(self.backbone.state_dict)} tensors, ViT patch {arch.patch_size}, width "
            f"{arch.embed_dim}, depth {arch.depth}, heads {arch.num_heads}, grid {arch.grid}, qkv bias "
            f"{arch.qkv_bias}, layer scale {arch.layer_scale}, rel pos bias {arch.rel_pos_bias}, "
            f"abs pos embed {arch.abs_pos_embed}, final norm {arch.final_norm}",
            f"heads from: {meta.get('num_heads_from', 'unknown')}",
        ]
        if self.dropped:
            parts = ", ".join(f"{prefix} ({n})" for prefix, n in sorted(self.dropped.items()))
            lines.append(f"not part of the encoder, dropped: {parts}")
        return "\n".join(lines)


# ---------------------------------------------------------------- reading files

LFS_POINTER = b"version https://git-lfs.github.com/spec/"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_PROTOCOL = b"\x80"  # torch's legacy format starts with a pickle protocol opcode
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def load_checkpoint_file(path: str | Path, trust_pickle: bool = False) -> dict:
    """Read a .safetensors file or a torch checkpoint. Torch files load with
    ``weights_only=True``; one that needs arbitrary unpickling (official releases
    store an argparse Namespace) is refused unless ``trust_pickle``. Anything that
    is not a readable checkpoint raises :class:`UnreadableCheckpointError` saying what it is."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UnreadableCheckpointError(f"{path} is not a file (a directory?); give the checkpoint file itself")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        raise UnreadableCheckpointError(f"{path} is empty (0 bytes): copy or download it again")
    if head.startswith(LFS_POINTER):
        raise UnreadableCheckpointError(
            f"{path} is a Git LFS pointer ({size} bytes of text), not the checkpoint: fetch the real file "
            "(git lfs pull, or download it) and convert that"
        )
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _load_safetensors(path, head, size)
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTOCOL)):
        raise UnreadableCheckpointError(
            f"{path} is not a checkpoint: neither a torch file (zip archive or pickle) nor safetensors; "
            f"it begins with {head[:32]!r}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = ANSI_ESCAPE.sub("", str(err))
        needed = re.search(r"GLOBAL ([\w.]+)", message)
        if needed and not trust_pickle:
            raise UntrustedPickleError(
                f"{path} stores pickled Python objects besides tensors ({needed.group(1)}, e.g. the training "
                "arguments official releases save), and unpickling can run arbitrary code. If you trust where "
                "the file comes from, pass --trust-pickle (trust_pickle=True)."
            ) from None
        if not trust_pickle:  # a damaged pickle, or one using operations beyond tensors
            detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:160]
            raise UnreadableCheckpointError(
                f"{path} cannot be read as tensors only ({detail}): it is damaged, or it pickles other "
                "objects; if you trust where it comes from, --trust-pickle reads it fully"
            ) from None
    except Exception as err:  # truncated zip archives, EOF in a legacy pickle, ...
        raise _damaged(path, str(err)) from None
    else:
        return _checkpoint_dict(path, obj)
    try:  # trusted: unpickle everything
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:
        raise UnreadableCheckpointError(
            f"{path}: its pickled objects need code this environment lacks ({err}); "
            "re-save its state dict with tensors only"
        ) from None
    except Exception as err:
        raise _damaged(path, str(err)) from None
    return _checkpoint_dict(path, obj.state_dict() if isinstance(obj, torch.nn.Module) else obj)


def _checkpoint_dict(path: Path, obj: object) -> dict:
    if not isinstance(obj, dict):
        raise UnreadableCheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint (a dict of tensors)")
    return obj


def _damaged(path: Path, message: str) -> UnreadableCheckpointError:
    first = ANSI_ESCAPE.sub("", message).strip().splitlines()[0] if message.strip() else "no detail"
    return UnreadableCheckpointError(
        f"{path} is a truncated or damaged torch checkpoint ({first[:160]}): copy or download it again"
    )


def _looks_like_safetensors(head: bytes) -> bool:
    # safetensors: 8-byte little-endian header length, then the JSON header
    return len(head) > 8 and head[8:9] == b"{"


def _load_safetensors(path: Path, head: bytes, size: int) -> dict:
    from safetensors.torch import load_file

    header = int.from_bytes(head[:8], "little") if len(head) >= 8 else None
    if header is None or 8 + header > size:
        raise UnreadableCheckpointError(
            f"{path} is a truncated or damaged safetensors file ({size} bytes, shorter than its header "
            "says): copy or download it again"
        )
    try:
        tensors = load_file(str(path))
        metadata = read_metadata(path)
    except Exception as err:  # safetensors' own error type
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableCheckpointError(
            f"{path} is a truncated or damaged safetensors file ({first}): copy or download it again"
        ) from None
    return {"__safetensors__": tensors, "__metadata__": metadata}


# ---------------------------------------------------------------- attention heads


@dataclass(frozen=True)
class SizeTable:
    """The ViT sizes one codebase builds: size name -> (width, depth, heads)."""

    family: str
    sizes: dict[str, tuple[int, int, int]]
    exact_names: bool = False  # names are whole identifiers (mmpretrain arch), not words in a model name

    def heads(self, width: int, depth: int) -> int | None:
        """Heads of the (width, depth) size, None if absent or ambiguous."""
        found = {h for w, d, h in self.sizes.values() if (w, d) == (width, depth)}
        return found.pop() if len(found) == 1 else None

    def lookup(self, name: str) -> tuple[int, int, int] | None:
        name = name.lower()
        if name in self.sizes:
            return self.sizes[name]
        if self.exact_names:
            return None
        words = re.split(r"[_\-./\s]+", name)
        return next((self.sizes[w] for w in words if w in self.sizes), None)


STANDARD = SizeTable(
    "timm / MAE / DeiT / DINO / this project",
    {name: (a["embed_dim"], a["depth"], a["num_heads"]) for name, a in VIT_ARCHS.items()},
)
CAE = SizeTable("CAE", {"tiny": (192, 12, 12), "small": (384, 12, 12), "base": (768, 12, 12), "large": (1024, 24, 16)})
MOCO_V3 = SizeTable("MoCo v3", {"small": (384, 12, 12), "base": (768, 12, 12)})
BEIT = SizeTable("BEiT", {"base": (768, 12, 12), "large": (1024, 24, 16)})
DINOV2 = SizeTable(
    "DINOv2",
    {
        "small": (384, 12, 6),
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
        "giant": (1536, 40, 24),
        "giant2": (1536, 40, 24),
    },
)
_MM_ARCHS = {
    ("s", "small"): (768, 8, 8),
    ("b", "base"): (768, 12, 12),
    ("l", "large"): (1024, 24, 16),
    ("h", "huge"): (1280, 32, 16),
    ("eva-g", "eva-giant"): (1408, 40, 16),
    ("deit-t", "deit-tiny"): (192, 12, 3),
    ("deit-s", "deit-small", "dinov2-s", "dinov2-small"): (384, 12, 6),
    ("deit-b", "deit-base"): (768, 12, 12),
    ("dinov2-g", "dinov2-giant"): (1536, 40, 24),
    ("mocov3-s", "mocov3-small"): (384, 12, 12),
}
MMPRETRAIN = SizeTable(
    "mmpretrain", {name: size for names, size in _MM_ARCHS.items() for name in names}, exact_names=True
)
# mmpretrain's MoCo v3 configs: ViT-S is "mocov3-small" (12 heads), larger ones standard.
MMPRETRAIN_MOCO_V3 = SizeTable(
    "mmpretrain MoCo v3",
    {"mocov3-s": (384, 12, 12), "mocov3-small": (384, 12, 12), "b": (768, 12, 12), "l": (1024, 24, 16)},
    exact_names=True,
)
# Widths at which codebases writing the same bare layout disagree on the head count.
CONTESTED_WIDTHS = {192: "CAE builds ViT-tiny with 12", 384: "CAE and MoCo v3 build ViT-S with 12"}


def resolve_heads(
    width: int,
    depth: int,
    table_heads: int | None,
    named: list[tuple[str, str | int]],
    sizes: SizeTable | None,
    shared_layout: bool,
    num_heads: int | None,
) -> tuple[int, str]:
    """The head count and where it came from; see the module docstring for the order.
    ``named``: the file's own records, (where, model name or head count)."""
    if num_heads is not None and (num_heads < 1 or width % num_heads):
        raise HeadCountError(f"--num-heads {num_heads} does not divide the width {width}")
    recorded: list[tuple[int, str]] = []
    if table_heads is not None:
        recorded.append((table_heads, "the relative position bias table"))
    for where, value in named:
        if isinstance(value, int):
            recorded.append((value, f"{where}={value}"))
            continue
        table = CAE if re.search(r"(^|[_\-])cae([_\-]|$)", value.lower()) else (sizes or STANDARD)
        size = table.lookup(value)
        if size is None:
            continue
        if size[:2] != (width, depth):
            raise HeadCountError(
                f"{where}={value!r} names a {size[0]}-wide, {size[1]}-block ViT, but the weights are "
                f"{width}-wide with {depth} blocks: the file is inconsistent"
            )
        recorded.append((size[2], f"{where}={value!r} ({table.family} sizes)"))
    if recorded:
        heads, how = recorded[0]
        for other, other_how in recorded[1:]:
            if other != heads:
                raise HeadCountError(f"{how} gives {heads} heads but {other_how} gives {other}")
        if num_heads is not None and num_heads != heads:
            raise HeadCountError(f"--num-heads {num_heads} contradicts {how}, which gives {heads} heads")
        return heads, how
    known = sizes.heads(width, depth) if sizes is not None else None
    if known is not None:
        how = f"{sizes.family} sizes (width {width}, depth {depth})"
        contested = CONTESTED_WIDTHS.get(width) if shared_layout else None
        if num_heads is None or num_heads == known:
            if contested and num_heads is None:
                how += f"; {contested}: if the file comes from them, pass --num-heads 12"
            return known, how
        if contested:
            return num_heads, f"--num-heads (overriding {known} of the {sizes.family} sizes; {contested})"
        raise HeadCountError(
            f"--num-heads {num_heads} contradicts {how}, which have {known} heads at this width and depth"
        )
    if num_heads is not None:
        return num_heads, "--num-heads"
    raise HeadCountError(
        f"cannot tell the number of attention heads of this {width}-wide, {depth}-block ViT: weight shapes "
        "do not determine it and neither the file nor its layout's known sizes record it; pass --num-heads N"
    )


# ---------------------------------------------------------------- architecture and checks


def infer_arch(state: dict, num_heads: int | None = None, sizes: SizeTable | None = STANDARD) -> BackboneArch:
    """Architecture from canonical tensor names and shapes (heads: see :func:`resolve_heads`)."""
    return _infer_arch(state, num_heads, sizes)[0]


def _infer_arch(
    state: dict,
    num_heads: int | None,
    sizes: SizeTable | None,
    named: list[tuple[str, str | int]] = (),
    shared_layout: bool = False,
) -> tuple[BackboneArch, str]:
    anchors = ["patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in anchors if k not in state]
    if missing or not any(k.startswith("blocks.") for k in state):
        raise UnknownCheckpointError(f"not a complete ViT encoder: missing {missing or ['blocks.*']}")
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2]:
        raise UnknownCheckpointError(f"patch_embed.proj.weight has shape {tuple(proj.shape)}, not a square patch conv")
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    table = state.get(
        "rel_pos_bias.relative_position_bias_table", state.get("blocks.0.attn.relative_position_bias_table")
    )
    if "pos_embed" in state:
        positions = state["pos_embed"].shape[1] - 1 if state["pos_embed"].ndim == 3 else -1
        side = round(max(positions, 0) ** 0.5)
        if positions < 1 or side * side != positions:
            raise UnknownCheckpointError(
                f"pos_embed has shape {tuple(state['pos_embed'].shape)}: not a class token plus a square grid"
            )
    elif table is not None:
        side = round(((table.shape[0] - 3) ** 0.5 + 1) / 2)
    else:
        raise UnknownCheckpointError(
            "no pos_embed and no relative position bias table: the encoder would not know where its patches are"
        )
    heads, heads_from = resolve_heads(
        embed_dim, depth, None if table is None else table.shape[1], list(named), sizes, shared_layout, num_heads
    )
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
    if "norm.weight" in state and "fc_norm.weight" in state:
        raise UnknownCheckpointError(
            "both a final norm on every token (norm) and one on the mean patch token (fc_norm): the suite's "
            "ViT has one final norm, and which one the model's features use is not recorded"
        )
    arch = BackboneArch(
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
        final_norm="mean_pooled" if "fc_norm.weight" in state and "norm.weight" not in state else "tokens",
    )
    return arch, heads_from


def _refuse_unsupported(state: dict, where: str = "") -> None:
    """Architectures the suite's ViT cannot express, refused with what they are."""
    keys = list(state)
    registers = next((k for k in keys if k in ("register_tokens", "reg_token")), None)
    if registers is not None:
        n = state[registers].shape[-2] if state[registers].ndim >= 2 else 1
        raise UnknownCheckpointError(
            f"{where}{registers}: a ViT with {n} register tokens (DINOv2 *_reg, timm reg models); the suite's ViT "
            "has none, and dropping them would change every feature (all tokens attend to them): not convertible"
        )
    if any(re.fullmatch(r"blocks\.\d+\.mlp\.(w12|w3)\.weight", k) for k in keys):
        raise UnknownCheckpointError(
            f"{where}blocks.N.mlp.w12/w3: a SwiGLU MLP (DINOv2 ViT-g); the suite's ViT has a GELU MLP: not convertible"
        )
    if any(re.match(r"patch_embed\.proj\.\d+\.", k) for k in keys):
        raise UnknownCheckpointError(
            f"{where}patch_embed.proj.N.*: a convolutional stem (MoCo v3 vit_conv_*); the suite's ViT has a "
            "single patch projection: not convertible"
        )
    if "dist_token" in state:
        raise UnknownCheckpointError(f"{where}dist_token: a distilled DeiT with a distillation token: not convertible")


def _split(state: dict, dropped_prefixes: tuple[str, ...], where: str = "") -> tuple[dict, dict[str, int]]:
    """Encoder tensors, and counts of the known non-encoder keys; other keys are an error."""
    _refuse_unsupported(state, where)
    encoder, dropped, unknown = {}, {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            unknown.append(key)
        elif ENCODER_KEY.fullmatch(key):
            encoder[key] = value
        elif DERIVED_KEY.fullmatch(key):
            dropped[DERIVED] = dropped.get(DERIVED, 0) + 1
        elif any(key.startswith(p) for p in dropped_prefixes):
            prefix = where + next(p for p in dropped_prefixes if key.startswith(p))
            dropped[prefix] = dropped.get(prefix, 0) + 1
        else:
            unknown.append(where + key)
    if unknown:
        shown = sorted(unknown)[:12]
        more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
        raise UnknownCheckpointError(f"keys the converter cannot map to the encoder: {shown}{more}")
    if not encoder:
        raise UnknownCheckpointError(f"no encoder keys found{' under ' + where if where else ''}")
    return encoder, dropped


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _count_others(state: dict, kept_prefix: str, dropped: dict[str, int], depth: int = 1) -> None:
    """Count the keys outside ``kept_prefix`` as dropped, by their first ``depth`` name parts."""
    for key in state:
        if not key.startswith(kept_prefix):
            label = ".".join(key.split(".")[:depth])
            dropped[label] = dropped.get(label, 0) + 1


# ---------------------------------------------------------------- layouts


@dataclass
class _Source:
    """What one layout yields before the architecture is inferred."""

    encoder: dict
    dropped: dict[str, int]
    sizes: SizeTable | None
    method: str | None = None
    epochs: int | None = None
    named: list[tuple[str, str | int]] = field(default_factory=list)
    shared_layout: bool = False


def detect_format(obj: dict) -> str:
    """The layout of a loaded checkpoint (one of :data:`FORMATS`, or ``canonical``)."""
    if "__safetensors__" in obj:
        meta = obj.get("__metadata__") or {}
        if meta.get("format"):
            return "canonical"
        return "dinov2" if _is_dinov2_release(obj["__safetensors__"]) else "timm"
    state_dict = obj.get("state_dict")
    if isinstance(state_dict, dict):
        if any(k.startswith("sdae.") for k in state_dict):
            return "sdae-suite"
        if any(k.startswith(("module.base_encoder.", "base_encoder.")) for k in state_dict):
            return "moco-v3"
        if any(k.startswith("backbone.") for k in state_dict):
            return "mmpretrain"
    if _self_distillation_parts(obj):
        return _self_distillation_format(obj)
    model = obj.get("model")
    if isinstance(model, dict):
        if isinstance(obj.get("model_teacher"), dict):
            return "official-sdae"
        if any(k.startswith("encoder.blocks.") for k in model):
            return "cae"
        if "blocks.0.attn.q_bias" in model or "rel_pos_bias.relative_position_bias_table" in model:
            return "beit"
        if "blocks.0.attn.relative_position_bias_table" in model:
            return "beit"
        if "blocks.0.attn.qkv.weight" in model:
            return "official-mae"
    if _is_dinov2_release(obj):
        return "dinov2"
    if "blocks.0.attn.qkv.weight" in obj:
        return "timm"
    top = sorted(str(k) for k in obj)[:12]
    raise UnknownCheckpointError(f"unrecognised checkpoint layout (top-level keys {top}); known: {', '.join(FORMATS)}")


def _is_dinov2_release(state: dict) -> bool:
    # DINOv2's hub files: a bare backbone with a 2-D mask token (or register tokens) and layer scale
    if "register_tokens" in state:
        return True
    mask = state.get("mask_token")
    return isinstance(mask, torch.Tensor) and mask.ndim == 2 and "blocks.0.ls1.gamma" in state


def _self_distillation_parts(obj: dict) -> dict[str, dict]:
    """DINO / iBOT / DINOv2 training checkpoints: ``teacher`` / ``student`` state dicts
    (``[module.]backbone.*``), or DINOv2's trainer ``model`` holding both."""
    parts = {name: obj[name] for name in ("teacher", "student") if isinstance(obj.get(name), dict)}
    if not parts and isinstance(obj.get("model"), dict):
        model = obj["model"]
        parts = {name: _strip(model, f"{name}.") for name in ("teacher", "student")}
        parts = {name: part for name, part in parts.items() if part}
    parts = {name: _strip_module(part) for name, part in parts.items()}
    if parts and all(any(k.startswith("backbone.") for k in part) for part in parts.values()):
        return parts
    return {}


def _self_distillation_format(obj: dict) -> str:
    parts = _self_distillation_parts(obj)
    keys = [k for part in parts.values() for k in part]
    if any(
        ".ls1.gamma" in k or k.startswith("dino_head.") or re.match(r"backbone\.blocks\.\d+\.\d+\.", k) for k in keys
    ):
        return "dinov2"
    if "ibot_loss" in obj or any(k == "backbone.masked_embed" for k in keys):
        return "ibot"
    return "dino"


def _strip_module(state: dict) -> dict:
    # (Distributed)DataParallel wraps the model: every key starts with "module."
    if state and all(k.startswith("module.") for k in state):
        return _strip(state, "module.")
    return state


def _args_names(obj: dict, *fields: str) -> list[tuple[str, str | int]]:
    """Model names recorded in the official scripts' pickled ``args`` (or a dict)."""
    args = obj.get("args")
    values = vars(args) if hasattr(args, "__dict__") else (args if isinstance(args, dict) else {})
    return [(f"args.{name}", values[name]) for name in fields if isinstance(values.get(name), str)]


def _epochs(obj: dict, zero_based: bool = True) -> int | None:
    epoch = obj.get("epoch")
    if not isinstance(epoch, int):
        return None
    return epoch + 1 if zero_based else epoch  # MAE/BEiT/CAE/SdAE store the 0-based last epoch


def _sdae_suite(obj: dict, select: str) -> _Source:
    full = obj["state_dict"]
    if select == "teacher" and not any(k.startswith("sdae.teacher.") for k in full):
        raise UnknownCheckpointError("this checkpoint is the MAE baseline (target='pixels'): it has no teacher")
    encoder, dropped = _split(_strip(full, f"sdae.{select}."), ())
    others = {k.split(".")[1] for k in full if not k.startswith(f"sdae.{select}.")}
    dropped.update({f"sdae.{name}": sum(k.startswith(f"sdae.{name}.") for k in full) for name in others})
    method = "SdAE" if any(k.startswith("sdae.teacher.") for k in full) else "MAE"
    meta = obj.get("meta") or {}
    return _Source(encoder, dropped, STANDARD, method, meta.get("epoch"))


def _official_sdae(obj: dict, select: str) -> _Source:
    model, teacher = obj["model"], obj["model_teacher"]
    student_in_teacher_slot = any(k.startswith("decoder_") for k in teacher)
    if select == "teacher":
        if student_in_teacher_slot:
            raise UnknownCheckpointError(
                "model_teacher holds a second copy of the student (MAE layout with decoder_*): this file comes "
                "from a single-GPU run of the official SdAE code, whose main_pretrain.py saves "
                "model_teacher_without_ddp = model, so it has no teacher; use --select student"
            )
        state = dict(teacher)
        dropped_head = ("head.",)
        if "norm.weight" in state and "fc_norm.weight" in state:
            # the teacher's targets are its per-token outputs after `norm`; fc_norm
            # belongs to the classifier head it was built with and never trained
            dropped_head += ("fc_norm.",)
        encoder, dropped = _split(state, dropped_head, "model_teacher.")
        named = _args_names(obj, "model_teacher")
    else:
        encoder, dropped = _split(model, ("decoder_", "mask_token"), "model.")
        dropped["model_teacher" + (" (copy of the student)" if student_in_teacher_slot else "")] = len(teacher)
        named = _args_names(obj, "model")
    return _Source(encoder, dropped, STANDARD, "SdAE", _epochs(obj), named, shared_layout=True)


def _official_mae(obj: dict) -> _Source:
    encoder, dropped = _split(obj["model"], ("decoder_", "mask_token", "head."))
    return _Source(encoder, dropped, STANDARD, "MAE", _epochs(obj), _args_names(obj, "model"), shared_layout=True)


def _beit(obj: dict) -> _Source:
    # BEiT v2 adds a patch-aggregation branch (cls_pt_*) used only in pretraining
    encoder, dropped = _split(obj["model"], ("mask_token", "lm_head.", "head.", "cls_pt_"))
    named = _args_names(obj, "model")
    method = "CAE" if any("cae" in str(name).lower() for _, name in named) else "BEiT"
    return _Source(encoder, dropped, BEIT, method, _epochs(obj), named)


def _cae(obj: dict) -> _Source:
    model = obj["model"]
    encoder, dropped = _split(_strip(model, "encoder."), ("mask_token",), "encoder.")
    _count_others(model, "encoder.", dropped)
    return _Source(encoder, dropped, CAE, "CAE", _epochs(obj), _args_names(obj, "model"))


def _moco_v3(obj: dict, select: str) -> _Source:
    state = _strip_module(obj["state_dict"])
    part = "base_encoder" if select == "student" else "momentum_encoder"
    encoder, dropped = _split(_strip(state, f"{part}."), ("head.",), f"{part}.")
    _count_others(state, f"{part}.", dropped)
    named = [("arch", obj["arch"])] if isinstance(obj.get("arch"), str) else _args_names(obj, "arch")
    return _Source(encoder, dropped, MOCO_V3, "MoCo v3", _epochs(obj, zero_based=False), named)


def _self_distillation(obj: dict, fmt: str, select: str) -> _Source:
    parts = _self_distillation_parts(obj)
    if select not in parts:
        raise UnknownCheckpointError(f"this {fmt} checkpoint has no {select}; it holds {sorted(parts)}")
    state = parts[select]
    backbone = _strip(state, "backbone.")
    # DINOv2 trains with chunked blocks (blocks.<chunk>.<index>); the index is global
    backbone = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in backbone.items()}
    encoder, dropped = _split(backbone, ("masked_embed", "mask_token"), f"{select}.backbone.")
    heads: dict[str, int] = {}
    _count_others(state, "backbone.", heads)  # DINO/iBOT head, DINOv2 dino_head / ibot_head
    dropped.update({f"{select}.{name}": n for name, n in heads.items()})
    for other in parts.keys() - {select}:
        dropped[other] = len(parts[other])
    method = {"dino": "DINO", "ibot": "iBOT", "dinov2": "DINOv2"}[fmt]
    sizes = DINOV2 if fmt == "dinov2" else STANDARD
    return _Source(encoder, dropped, sizes, method, _epochs(obj, zero_based=False), _args_names(obj, "arch"))


def _dinov2_release(state: dict) -> _Source:
    encoder, dropped = _split(state, ("mask_token",))
    return _Source(encoder, dropped, DINOV2, "DINOv2")


# mmpretrain / mmselfsup (OpenMMLab) backbone names -> timm names, first match wins
MM_RENAMES = [
    (r"patch_embed\.projection\.", "patch_embed.proj."),
    (r"layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"layers\.(\d+)\.attn\.gamma1\.weight$", r"blocks.\1.ls1.gamma"),
    (r"layers\.(\d+)\.ffn\.gamma2\.weight$", r"blocks.\1.ls2.gamma"),
    (r"layers\.(\d+)\.attn\.", r"blocks.\1.attn."),
    (r"layers\.(\d+)\.gamma_(1|2)$", r"blocks.\1.gamma_\2"),
    (r"ln1\.", "norm."),  # final norm on every token (final_norm=True)
    (r"ln2\.", "fc_norm."),  # norm of the mean patch token (out_type="avg_featmap")
]


def _mm_name(key: str) -> str:
    for pattern, replacement in MM_RENAMES:
        renamed, n = re.subn("^" + pattern, replacement, key, count=1)
        if n:
            return renamed
    return key


def _mmpretrain(obj: dict) -> _Source:
    state = obj["state_dict"]
    backbone = {_mm_name(k): v for k, v in _strip(state, "backbone.").items()}
    if any(k.startswith("pre_norm.") for k in backbone):
        raise UnknownCheckpointError(
            "backbone.pre_norm: a ViT with a norm before the blocks (CLIP style); the suite's ViT has none: "
            "not convertible"
        )
    # BEiT / MaskFeat pretraining backbones hold their mask token
    encoder, dropped = _split(backbone, ("mask_token",), "backbone.")
    _count_others(state, "backbone.", dropped)
    cfg = _mm_config_text(obj)
    backbone_cfg = _mm_dict_text(cfg, "backbone") if cfg else None
    named: list[tuple[str, str | int]] = []
    if backbone_cfg:
        heads = re.search(r"num_heads\s*=\s*(\d+)", backbone_cfg)
        arch = re.search(r"arch\s*=\s*['\"]([\w\-]+)['\"]", backbone_cfg)
        if heads:
            named.append(("meta.cfg backbone num_heads", int(heads.group(1))))
        elif arch:
            named.append(("meta.cfg backbone arch", arch.group(1)))
    model_type = re.search(r"^model\s*=\s*dict\(\s*type\s*=\s*['\"]([\w\-]+)['\"]", cfg or "", re.M)
    moco = any(k.startswith("momentum_encoder.") for k in state) or "MoCoV3" in (backbone_cfg or "")
    sizes = MMPRETRAIN_MOCO_V3 if moco else MMPRETRAIN
    method = model_type.group(1) if model_type else ("MoCoV3" if moco else None)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return _Source(encoder, dropped, sizes, method, meta.get("epoch"), named)


def _mm_config_text(obj: dict) -> str | None:
    meta = obj.get("meta")
    cfg = meta.get("cfg") if isinstance(meta, dict) else None
    return cfg if isinstance(cfg, str) else None


def _mm_dict_text(cfg: str, name: str) -> str | None:
    """The text of ``name=dict(...)`` in an mmengine config dump (balanced parentheses)."""
    match = re.search(rf"\b{name}\s*=\s*dict\(", cfg)
    if not match:
        return None
    depth, start = 0, match.end() - 1
    for i in range(start, len(cfg)):
        depth += {"(": 1, ")": -1}.get(cfg[i], 0)
        if depth == 0:
            return cfg[start : i + 1]
    return None


def _timm(obj: dict) -> _Source:
    state = obj.get("__safetensors__", obj)
    encoder, dropped = _split(state, ("head.", "head_drop."))
    return _Source(encoder, dropped, STANDARD, shared_layout=True)


def convert(obj: dict, select: str | None = None, num_heads: int | None = None) -> Conversion:
    """Map a loaded checkpoint to a canonical backbone, checked complete. ``select``
    picks the student or the teacher of two-encoder checkpoints (default: the one the
    method's own evaluation uses, see :data:`DEFAULT_SELECT`)."""
    if select not in (None, "student", "teacher"):
        raise ValueError(f"select must be 'student' or 'teacher', got {select!r}")
    fmt = detect_format(obj)
    if fmt == "canonical":
        raise UnknownCheckpointError("this is already a canonical backbone file")
    if select == "teacher" and fmt not in DEFAULT_SELECT:
        raise ValueError(f"a {fmt} checkpoint has no EMA teacher; use --select student")
    select = select or DEFAULT_SELECT.get(fmt)
    if fmt == "sdae-suite":
        source = _sdae_suite(obj, select)
    elif fmt == "official-sdae":
        source = _official_sdae(obj, select)
    elif fmt == "official-mae":
        source = _official_mae(obj)
    elif fmt == "beit":
        source = _beit(obj)
    elif fmt == "cae":
        source = _cae(obj)
    elif fmt == "moco-v3":
        source = _moco_v3(obj, select)
    elif fmt in ("dino", "ibot") or (fmt == "dinov2" and _self_distillation_parts(obj)):
        source = _self_distillation(obj, fmt, select)
    elif fmt == "dinov2":
        if select == "student":
            raise ValueError("a DINOv2 release file holds one backbone (the teacher); use --select teacher")
        source = _dinov2_release(obj.get("__safetensors__", obj))
    elif fmt == "mmpretrain":
        source = _mmpretrain(obj)
    else:
        source = _timm(obj)
    arch, heads_from = _infer_arch(source.encoder, num_heads, source.sizes, source.named, source.shared_layout)
    try:
        check_complete_encoder(source.encoder, arch, f"the {fmt} encoder")
    except BackboneKeyError as err:
        raise UnknownCheckpointError(f"{err}; refusing to convert") from None
    metadata: dict = {"source_format": fmt, "num_heads_from": heads_from, "dropped": dict(source.dropped)}
    if source.method or source.epochs is not None:
        metadata["pretraining"] = {"method": source.method, "epochs": source.epochs}
    if select is not None:
        metadata["select"] = select
    return Conversion(CanonicalBackbone(source.encoder, arch, metadata), fmt, source.dropped)
