import math

import pytest
import torch

from pretrain.models import SdAE, cosine_loss, masked_pixel_loss, normalize_per_token, patchify


def test_eq3_per_token_normalisation():
    x = torch.randn(2, 5, 7, dtype=torch.float64)
    out = normalize_per_token(x)
    for b in range(2):
        for i in range(5):
            v = x[b, i].tolist()
            mean = sum(v) / len(v)
            var = sum((a - mean) ** 2 for a in v) / (len(v) - 1)  # unbiased, as Tensor.var
            expected = [(a - mean) / math.sqrt(var + 1e-6) for a in v]
            assert out[b, i].tolist() == pytest.approx(expected, rel=1e-9)


def test_eq4_token_axis_cosine():
    """Eq. 4: sum_i m_i t_i p_i / (sqrt(sum_i m_i t_i^2) sqrt(sum_i m_i p_i^2)), per channel."""
    pred, target = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 4, 6, dtype=torch.float64)
    cosines = []
    for g in range(3):
        for d in range(6):
            p, t = pred[g, :, d].tolist(), target[g, :, d].tolist()
            num = sum(a * b for a, b in zip(p, t, strict=True))
            cosines.append(num / (math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in t))))
    expected = 1 - sum(cosines) / len(cosines)
    assert cosine_loss(pred, target, "token").item() == pytest.approx(expected, rel=1e-6)


def test_feature_axis_cosine():
    pred, target = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    cosines = []
    for g in range(2):
        for i in range(5):
            p, t = pred[g, i].tolist(), target[g, i].tolist()
            num = sum(a * b for a, b in zip(p, t, strict=True))
            cosines.append(num / (math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in t))))
    assert cosine_loss(pred, target, "feature").item() == pytest.approx(1 - sum(cosines) / 10, rel=1e-6)


def test_loss_bounds_and_errors():
    x = torch.randn(2, 3, 4)
    assert cosine_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="loss axis"):
        cosine_loss(x, x, "channel")
    with pytest.raises(ValueError, match=r"\(G, n, D\)"):
        cosine_loss(x, x[:, :2])


def test_mae_pixel_loss_against_explicit_patches():
    imgs = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    p = 16
    patches = patchify(imgs, p)
    # patch k = (row, col) row-major, pixels ordered (y, x, channel)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        block = imgs[1, :, r * p : (r + 1) * p, c * p : (c + 1) * p].permute(1, 2, 0).reshape(-1)
        assert torch.equal(patches[1, k], block)
    pred = torch.randn(2, 4, p * p * 3, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 1]])
    total, count = 0.0, 0
    for b in range(2):
        for k in range(4):
            if mask[b, k]:
                t = patches[b, k]
                t = (t - t.mean()) / (t.var() + 1e-6) ** 0.5
                total += ((pred[b, k] - t) ** 2).mean().item()
                count += 1
    assert masked_pixel_loss(pred, imgs, mask, p).item() == pytest.approx(total / count, rel=1e-6)


def small_sdae(**kwargs) -> SdAE:
    return SdAE(arch="tiny", img_size=64, decoder=dict(embed_dim=64, depth=1, num_heads=2), **kwargs)


def test_sdae_loss_uses_the_published_grouping():
    """The model's loss equals Eq. 4 applied per fold to normalised teacher targets."""
    from pretrain.models import random_patch_mask, teacher_targets

    torch.manual_seed(0)
    model = small_sdae(teacher_input=dict(kind="multi_fold", num_tokens=12, num_folds=3)).eval()
    imgs = torch.randn(2, 3, 64, 64)
    mask = random_patch_mask(2, 16, 0.75, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = model(imgs, mask)["loss"]
        pred = model.predict(imgs, mask)
        target, ids = teacher_targets(model.teacher, imgs, mask, model.teacher_input)
    cosines = []
    for b in range(2):
        for f in range(3):
            t = normalize_per_token(target[b, f])
            p = pred[b, ids[b, f]]
            cosines.append(torch.nn.functional.cosine_similarity(p, t, dim=0))
    assert loss.item() == pytest.approx(1 - torch.cat(cosines).mean().item(), rel=1e-5)


def test_mae_baseline_has_no_teacher_and_rejects_teacher_options():
    model = small_sdae(target="pixels")
    assert model.teacher is None
    assert model.decoder.head.out_features == 16 * 16 * 3
    with pytest.raises(ValueError, match="meaningless"):
        small_sdae(target="pixels", teacher_input=dict(kind="masked"))
    with pytest.raises(RuntimeError, match="no teacher"):
        model.update_teacher(0.9)
