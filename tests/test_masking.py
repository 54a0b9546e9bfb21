import pytest
import torch

from pretrain.models import random_patch_mask, split_into_folds


def test_visible_and_masked_are_disjoint_and_complete():
    mask = random_patch_mask(8, 196, 0.75, generator=torch.Generator().manual_seed(0))
    assert mask.num_visible == 49 and mask.num_masked == 147
    for b in range(8):
        visible = set(mask.visible_ids[b].tolist())
        masked = set(mask.masked_ids[b].tolist())
        assert not visible & masked
        assert visible | masked == set(range(196))


def test_binary_mask_and_restore_are_consistent():
    mask = random_patch_mask(4, 36, 0.75, generator=torch.Generator().manual_seed(1))
    binary = mask.binary()
    assert binary.sum(1).tolist() == [27.0] * 4
    for b in range(4):
        assert binary[b, mask.visible_ids[b]].sum() == 0
        assert binary[b, mask.masked_ids[b]].min() == 1
        shuffled = torch.arange(36)[mask.ids_shuffle[b]]
        assert torch.equal(shuffled[mask.ids_restore[b]], torch.arange(36))


def test_masks_differ_per_sample_and_per_call():
    gen = torch.Generator().manual_seed(2)
    a = random_patch_mask(16, 196, 0.75, generator=gen)
    b = random_patch_mask(16, 196, 0.75, generator=gen)
    rows = {tuple(sorted(r.tolist())) for r in a.visible_ids}
    assert len(rows) == 16  # every sample has its own mask
    assert not torch.equal(a.ids_shuffle, b.ids_shuffle)


def test_visible_patches_are_uniform():
    """Each patch is visible with probability 1 - r (chi-square-free check: 3 sigma)."""
    mask = random_patch_mask(4000, 16, 0.75, generator=torch.Generator().manual_seed(3))
    freq = torch.zeros(16)
    freq.scatter_add_(0, mask.visible_ids.flatten(), torch.ones(mask.visible_ids.numel()))
    p = freq / 4000
    assert torch.all((p - 0.25).abs() < 3 * (0.25 * 0.75 / 4000) ** 0.5)


def test_folds_disjoint_and_cover_shrink_num():
    mask = random_patch_mask(5, 196, 0.75, generator=torch.Generator().manual_seed(4))
    folds = split_into_folds(mask.masked_ids, 147, 3)
    assert folds.shape == (5, 3, 49)
    for b in range(5):
        members = [set(f.tolist()) for f in folds[b]]
        assert all(not (members[i] & members[j]) for i in range(3) for j in range(i + 1, 3))
        assert set().union(*members) == set(mask.masked_ids[b].tolist())


@pytest.mark.parametrize("num_tokens,num_folds,per_fold", [(147, 4, 36), (147, 2, 73), (100, 3, 33)])
def test_fold_remainder_is_dropped(num_tokens, num_folds, per_fold):
    mask = random_patch_mask(2, 196, 0.75, generator=torch.Generator().manual_seed(5))
    folds = split_into_folds(mask.masked_ids, num_tokens, num_folds)
    assert folds.shape == (2, num_folds, per_fold)
    # the folds are the first per_fold * num_folds masked patches, nothing else
    assert torch.equal(folds.flatten(1), mask.masked_ids[:, : per_fold * num_folds])


def test_invalid_arguments_are_named():
    mask = random_patch_mask(1, 196, 0.75)
    with pytest.raises(ValueError, match="num_tokens=148"):
        split_into_folds(mask.masked_ids, 148, 3)
    with pytest.raises(ValueError, match="num_folds"):
        split_into_folds(mask.masked_ids, 10, 11)
    with pytest.raises(ValueError, match="mask_ratio"):
        random_patch_mask(1, 196, 1.0)
