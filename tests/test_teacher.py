import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from pretrain.models import TeacherInput, build_vit, random_patch_mask, teacher_targets

from conftest import timm_vit_like


@pytest.fixture(scope="module")
def teacher_and_reference():
    torch.manual_seed(0)
    teacher = build_vit("tiny", img_size=96, depth=2, pos_embed="learned").eval()
    return teacher, timm_vit_like(teacher)


def reference_sequence(ref: TimmViT, img: torch.Tensor, patch_ids: torch.Tensor) -> torch.Tensor:
    """One sequence through timm's ViT: the chosen patches (with their position
    embedding) after a class token; returns the patch outputs (n, D)."""
    tokens = ref.patch_embed(img[None]) + ref.pos_embed[:, 1:]
    x = torch.cat([ref.cls_token + ref.pos_embed[:, :1], tokens[:, patch_ids]], dim=1)
    return ref.norm(ref.blocks(x))[0, 1:]


def test_multi_fold_equals_each_fold_run_separately(teacher_and_reference):
    teacher, ref = teacher_and_reference
    imgs = torch.randn(3, 3, 96, 96)
    mask = random_patch_mask(3, 36, 0.75, generator=torch.Generator().manual_seed(1))
    feeding = TeacherInput("multi_fold", num_tokens=27, num_folds=3)
    features, ids = teacher_targets(teacher, imgs, mask, feeding)
    assert features.shape == (3, 3, 9, 192) and ids.shape == (3, 3, 9)
    with torch.no_grad():
        for b in range(3):
            for f in range(3):
                expected = reference_sequence(ref, imgs[b], ids[b, f])
                torch.testing.assert_close(features[b, f], expected, rtol=1e-4, atol=1e-5)


def test_folds_see_only_their_own_tokens(teacher_and_reference):
    """Changing one fold's pixels must not change another fold's outputs."""
    teacher, _ = teacher_and_reference
    imgs = torch.randn(1, 3, 96, 96)
    mask = random_patch_mask(1, 36, 0.75, generator=torch.Generator().manual_seed(2))
    feeding = TeacherInput("multi_fold", num_tokens=27, num_folds=3)
    before, ids = teacher_targets(teacher, imgs, mask, feeding)
    patch = int(ids[0, 0, 0])
    row, col = divmod(patch, 6)
    edited = imgs.clone()
    edited[..., row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += 5.0
    after, _ = teacher_targets(teacher, edited, mask, feeding)
    assert not torch.allclose(before[0, 0], after[0, 0])
    torch.testing.assert_close(before[0, 1:], after[0, 1:])


def test_full_image_and_masked_and_crop(teacher_and_reference):
    teacher, ref = teacher_and_reference
    imgs = torch.randn(2, 3, 96, 96)
    mask = random_patch_mask(2, 36, 0.75, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, ids = teacher_targets(teacher, imgs, mask, TeacherInput("full_image", num_folds=1))
        assert torch.equal(ids[:, 0], mask.masked_ids)
        whole = ref.forward_features(imgs)[:, 1:]
        for b in range(2):
            torch.testing.assert_close(full[b, 0], whole[b, mask.masked_ids[b]], rtol=1e-4, atol=1e-5)
        masked, ids = teacher_targets(teacher, imgs, mask, TeacherInput("masked", num_folds=1))
        crop, crop_ids = teacher_targets(teacher, imgs, mask, TeacherInput("crop", num_tokens=5, num_folds=1))
        assert crop.shape == (2, 1, 5, 192)
        assert torch.equal(crop_ids[:, 0], mask.masked_ids[:, :5])
        for b in range(2):
            torch.testing.assert_close(
                masked[b, 0], reference_sequence(ref, imgs[b], mask.masked_ids[b]), rtol=1e-4, atol=1e-5
            )
            torch.testing.assert_close(
                crop[b, 0], reference_sequence(ref, imgs[b], crop_ids[b, 0]), rtol=1e-4, atol=1e-5
            )


@pytest.mark.parametrize(
    "spec,match",
    [
        (dict(kind="multi_fold", num_folds=1), "num_folds >= 2"),
        (dict(kind="crop"), "needs num_tokens"),
        (dict(kind="full_image", num_tokens=3), "takes neither"),
        (dict(kind="everything"), "must be one of"),
        (dict(kind="multi_fold", folds=3), "bad teacher_input"),
    ],
)
def test_bad_feeding_configs_are_explained(spec, match):
    with pytest.raises(ValueError, match=match):
        TeacherInput.build(spec)
