import numpy as np
import pytest

from pretrain.models import sincos_2d


def mae_reference(embed_dim: int, grid: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed, written out from its definition:
    omega_d = 1 / 10000^(d / (D/4)), first D/2 channels encode the column,
    the next D/2 the row, each as [sin(pos * omega), cos(pos * omega)]."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    rows = []
    for r in range(grid):
        for c in range(grid):
            rows.append(np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)]))
    return np.stack(rows)


@pytest.mark.parametrize("dim,grid", [(16, 4), (192, 6), (768, 14)])
def test_matches_mae_formula(dim, grid):
    ours = sincos_2d(dim, grid, grid).numpy()
    np.testing.assert_allclose(ours, mae_reference(dim, grid), atol=1e-6)


def test_cls_row_is_zero_and_nonsquare_layout():
    emb = sincos_2d(8, 2, 3, cls_token=True)
    assert emb.shape == (1 + 6, 8)
    assert emb[0].abs().sum() == 0
    # patch (row 1, col 2) is the 6th patch row-major; its column half encodes 2
    np.testing.assert_allclose(emb[1 + 5, :2].numpy(), [np.sin(2.0), np.sin(2.0 / 100)], atol=1e-6)


def test_width_must_divide_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(10, 2, 2)
