"""Which attention kernels a model actually runs, and its explicit-softmax reference.

timm's attention layers call ``torch.nn.functional.scaled_dot_product_attention``
(SDPA), which picks a kernel at run time from the inputs: flash attention, the
memory-efficient kernel (the only fused one that takes an additive bias with a
gradient on CUDA), cuDNN, or the "math" fallback that materialises the softmax.
Nothing in the model says which one ran, so the tests and the device check ask
torch's profiler.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.profiler import ProfilerActivity, profile

# aten operator -> kernel family (forward operators; each has a *_backward twin)
SDPA_KERNELS: dict[str, str] = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_efficient_attention": "memory_efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}
FUSED_KERNELS = frozenset({"flash", "flash_cpu", "memory_efficient", "cudnn"})


def sdpa_kernels(fn: Callable[[], object]) -> Counter[str]:
    """Runs ``fn()`` once under torch's profiler (CPU-side operator events, which
    also name the CUDA kernels' operators) and counts the SDPA kernel families
    it called, forward calls only; backward passes inside ``fn`` run the
    ``*_backward`` twin of each. Attention computed without SDPA (timm's
    explicit path) does not appear."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return Counter(SDPA_KERNELS[event.name] for event in prof.events() if event.name in SDPA_KERNELS)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm attention layers that can take the SDPA path (they carry ``fused_attn``)."""
    return [m for m in model.modules() if hasattr(m, "fused_attn")]


@contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """Switch every timm attention layer of ``model`` to timm's explicit form
    (``q @ k^T`` scaled, bias added, softmax, ``@ v``) and back: the independent
    reference the fused kernels are compared with."""
    layers = attention_modules(model)
    saved = [layer.fused_attn for layer in layers]
    for layer in layers:
        layer.fused_attn = False
    try:
        yield
    finally:
        for layer, fused in zip(layers, saved, strict=True):
            layer.fused_attn = fused
