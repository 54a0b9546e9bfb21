import numpy as np
import pytest
import torch

from pretrain.models import SdAE, cosine_momentum, ema_update_


def published_schedule(base, final, epochs, warmup_epochs=0, start_warmup=0.0):
    """The published per-epoch momentum schedule (DINO's cosine_scheduler, niter_per_ep=1)."""
    warmup = np.linspace(start_warmup, base, warmup_epochs) if warmup_epochs else np.array([])
    iters = np.arange(epochs - warmup_epochs)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([warmup, cosine])


@pytest.mark.parametrize("epochs,warmup", [(300, 0), (100, 0), (10, 3), (7, 1)])
def test_schedule_matches_published(epochs, warmup):
    expected = published_schedule(0.96, 0.99, epochs, warmup, 0.5)
    ours = [cosine_momentum(e, epochs, 0.96, 0.99, warmup, 0.5) for e in range(epochs)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_schedule_values():
    assert cosine_momentum(0, 300) == pytest.approx(0.96)
    assert cosine_momentum(150, 300) == pytest.approx(0.975)
    assert 0.9899 < cosine_momentum(299, 300) < 0.99
    with pytest.raises(ValueError, match="outside"):
        cosine_momentum(300, 300)


def test_ema_arithmetic():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update_(teacher, student, 0.9)
    for k in t0:
        torch.testing.assert_close(teacher.state_dict()[k], 0.9 * t0[k] + 0.1 * s0[k])
        assert torch.equal(student.state_dict()[k], s0[k])
    with pytest.raises(KeyError, match="differ"):
        ema_update_(torch.nn.Linear(4, 3), torch.nn.Sequential(torch.nn.Linear(4, 3)), 0.9)


def test_update_teacher_covers_encoder_only():
    torch.manual_seed(0)
    model = SdAE(
        arch="tiny", img_size=32, decoder=dict(embed_dim=32, depth=1, num_heads=2), teacher_input=dict(kind="masked")
    )
    teacher0 = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student = model.student.state_dict()
    decoder0 = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    model.update_teacher(0.96)
    for k, v in model.teacher.state_dict().items():  # incl. pos_embed, cls_token, final norm
        torch.testing.assert_close(v, 0.96 * teacher0[k] + 0.04 * student[k])
    assert all(torch.equal(v, decoder0[k]) for k, v in model.decoder.state_dict().items())
    assert "mask_token" not in str(list(model.teacher.state_dict()))


def test_teacher_init_options():
    kw = dict(arch="tiny", img_size=32, decoder=dict(embed_dim=32, depth=1, num_heads=2))
    torch.manual_seed(0)
    copied = SdAE(teacher_init="student", **kw)
    assert all(torch.equal(v, copied.student.state_dict()[k]) for k, v in copied.teacher.state_dict().items())
    independent = SdAE(teacher_init="random", **kw)
    assert independent.teacher.pos_embed.requires_grad is False  # frozen: EMA only
    assert not torch.equal(independent.teacher.pos_embed, independent.student.pos_embed)
    assert not any(p.requires_grad for p in independent.teacher.parameters())


def test_ema_skip_flag_is_decided_on_the_device():
    """A non-zero ``skip`` keeps the teacher bit for bit, even when the student holds NaNs
    (the step after a non-finite loss); zero gives the ordinary update."""
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        student.weight[0, 0] = float("nan")
    ema_update_(teacher, student, 0.9, skip=torch.ones(()))
    assert all(torch.equal(v, t0[k]) for k, v in teacher.state_dict().items())
    with torch.no_grad():
        student.weight[0, 0] = 0.5
    ema_update_(teacher, student, 0.9, skip=torch.zeros(()))
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, 0.9 * t0[k] + 0.1 * student.state_dict()[k])
