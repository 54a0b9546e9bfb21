"""What an SdAE checkpoint sees: the mask, how well the student predicts the
teacher on each masked patch, and where the class token attends."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.models import SdAE, gather_tokens, normalize_per_token, random_patch_mask, teacher_targets
from pretrain.models.vit import VisionTransformer

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def load_pretraining_checkpoint(path: str | Path) -> SdAE:
    """Rebuild the SdAE model from a training checkpoint (its config travels in ``meta.cfg``)."""
    from mmengine.config import Config

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    cfg = Config.fromstring(checkpoint["meta"]["cfg"], file_format=".py")
    kwargs = {k: v for k, v in cfg.model.items() if k not in ("type", "data_preprocessor", "init_cfg")}
    model = SdAE(**kwargs)
    state = {k.removeprefix("sdae."): v for k, v in checkpoint["state_dict"].items() if k.startswith("sdae.")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def image_tensor(path: str | Path, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Short side resized to ``size`` and center-cropped; (normalised tensor, uint8 array)."""
    img = Image.open(path).convert("RGB")
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img)
    tensor = (torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255 - MEAN) / STD
    return tensor[None], array


def cls_attention(encoder: VisionTransformer, imgs: torch.Tensor) -> torch.Tensor:
    """Last block's attention from the class token to every patch, averaged over
    heads, computed with an explicit softmax (fused attention returns no weights)."""
    tokens = encoder.embed_patches(imgs)
    cls = encoder.cls_token + encoder.pos_embed[:, :1]
    x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
    for block in encoder.blocks[:-1]:
        x = block(x)
    last = encoder.blocks[-1]
    attn = last.attn
    qkv = attn.qkv(last.norm1(x)).reshape(x.shape[0], x.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, 1+N, 1+N)
    return weights[:, :, 0, 1:].mean(dim=1)


@torch.no_grad()
def visualise(checkpoint: str | Path, image: str | Path, out: str | Path, seed: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_pretraining_checkpoint(checkpoint)
    if model.teacher is None:
        raise ValueError(f"{checkpoint} is an MAE-baseline checkpoint: it has no teacher to compare with")
    size, patch = model.student.patch_embed.img_size[0], model.student.patch_size
    grid = model.student.grid_size
    imgs, array = image_tensor(image, size)
    mask = random_patch_mask(
        1, model.student.num_patches, model.mask_ratio, generator=torch.Generator().manual_seed(seed)
    )
    pred = model.predict(imgs, mask)
    target, ids = teacher_targets(model.teacher, imgs, mask, model.teacher_input)
    ids = ids.flatten(1)
    target = normalize_per_token(target.flatten(1, 2)) if model.normalize_target else target.flatten(1, 2)
    cosine = F.cosine_similarity(gather_tokens(pred, ids), target, dim=-1)[0]
    cos_map = torch.full((model.student.num_patches,), float("nan"))
    cos_map[ids[0]] = cosine
    attention = cls_attention(model.student, imgs)[0]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    masked = array.copy()
    for idx in mask.masked_ids[0].tolist():
        r, c = divmod(idx, grid[1])
        masked[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] //= 4
    figures = {
        "mask.png": (masked, None, "visible patches (masked ones darkened)"),
        "teacher_student_cosine.png": (array, cos_map.view(*grid).numpy(), "cosine(student, teacher) per masked patch"),
        "cls_attention.png": (array, attention.view(*grid).numpy(), "last-layer class-token attention"),
    }
    paths = []
    for name, (background, heat, title) in figures.items():
        fig, ax = plt.subplots(figsize=(3.2, 3.4))
        ax.imshow(background)
        if heat is not None:
            shown = ax.imshow(heat, cmap="viridis", alpha=0.6, extent=(0, size, size, 0), interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths
