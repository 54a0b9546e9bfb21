"""CUDA-only checks (skipped where torch sees no GPU)."""

import pytest
import torch

from pretrain.models import SdAE, random_patch_mask


@pytest.mark.gpu
def test_bf16_autocast_step_matches_fp32():
    torch.manual_seed(0)
    model = SdAE(arch="small", img_size=224).cuda()
    imgs = torch.randn(8, 3, 224, 224, device="cuda")
    mask = random_patch_mask(8, 196, 0.75, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    fp32 = model(imgs, mask)["loss"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = model(imgs, mask)["loss"]
    assert bf16.dtype == torch.float32  # the loss is computed in fp32 under autocast
    assert bf16.item() == pytest.approx(fp32.item(), abs=2e-2)
    bf16.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.student.parameters() if p.grad is not None)
