"""Native-bf16 detection (`sam_core.device`): bf16 is offered where the CPU has it, never
picked silently, and a warning names the missing flag where it would be emulated."""

from __future__ import annotations

import warnings

import pytest
import torch

from sam_core import device as device_module
from sam_core.device import Bf16Support, bf16_support, check_precision, native_bf16_flags

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\nbugs\t\t: sysret_ss_attrs\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ANOTHER_LINE = "model name\t: avx512_bf16 marketing name\nflags\t\t: avx2\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (SAPPHIRE_RAPIDS, ("avx512_bf16", "amx_bf16")),
        (ZEN4, ("avx512_bf16",)),
        (ZEN3, ()),
        (GRAVITON3, ("bf16",)),
        (ANOTHER_LINE, ()),  # only the flags / Features lines count
    ],
)
def test_native_bf16_flags_from_cpuinfo(cpuinfo: str, expected: tuple[str, ...]) -> None:
    assert native_bf16_flags(cpuinfo) == expected


def test_this_machine_is_described() -> None:
    support = bf16_support()
    assert support.capability == torch.backends.cpu.get_cpu_capability()
    assert ("native" if support.native else "emulated") in support.describe()
    assert support.native == bool(support.flags) or support.source == "torch"


def test_emulated_bf16_warns_and_native_does_not(monkeypatch) -> None:
    cpu = torch.device("cpu")
    emulated = Bf16Support(False, (), "AVX2", "/proc/cpuinfo")
    monkeypatch.setattr(device_module, "bf16_support", lambda: emulated)
    with pytest.warns(RuntimeWarning, match="no native bf16.*emulated"):
        assert check_precision("bf16", cpu) == "bf16"
    native = Bf16Support(True, ("amx_bf16",), "AVX512", "/proc/cpuinfo")
    monkeypatch.setattr(device_module, "bf16_support", lambda: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_precision("bf16", cpu) == "bf16"
        assert check_precision("fp32", cpu) == "fp32"  # never upgraded to bf16 silently


def test_default_precision_is_fp32_everywhere() -> None:
    """No front end defaults to bf16, even on CPUs where it is native."""
    import inspect

    from sam_core import Predictor
    from sam_core.session import Session

    for api in (Predictor, Session):
        assert inspect.signature(api).parameters["precision"].default == "fp32"


# ------------------------------------------------ fused fp32 CPU kernels (encoder inference)
@pytest.mark.parametrize(("h", "w", "window"), [(14, 14, 7), (16, 19, 7), (64, 64, 14), (9, 30, 7)])
def test_tinyvit_block_inference_path_equals_autograd_path(h: int, w: int, window: int) -> None:
    """The inference path (fused kernels, windows copied block by block, no padded grid) gives
    the numbers of the plain path that fine-tuning uses, for grids with and without a partial
    last window."""
    from sam_core.modeling.tinyvit_encoder import TinyViTBlock

    torch.manual_seed(0)
    block = TinyViTBlock(dim=32, num_heads=2, window=window, mlp_ratio=4.0).eval()
    with torch.no_grad():
        block.attn.attention_biases.normal_()
        block.local_conv.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, h, w, 32)
    with torch.inference_mode():
        fast = block(x)
    with torch.enable_grad():
        plain = block(x.clone().requires_grad_(True))
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=1e-5)


def test_fused_convolutions_equal_plain_ones() -> None:
    """ConvBN's fused conv (+ GELU, + residual sum) equals conv → BN → (+) → GELU."""
    from torch.nn import functional as F

    from sam_core.modeling.tinyvit_encoder import ConvBN

    torch.manual_seed(0)
    conv = ConvBN(16, 16, 3, groups=1).eval()
    with torch.no_grad():
        conv.bn.running_mean.normal_()
        conv.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 16, 20, 24).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(1, 16, 20, 24).contiguous(memory_format=torch.channels_last)
    plain = F.gelu(conv.bn(conv.c(x)) + residual)
    with torch.inference_mode():
        fused = conv(x, gelu=True, add=residual)
    torch.testing.assert_close(fused, plain.detach(), atol=1e-5, rtol=1e-5)
    assert fused.is_contiguous(memory_format=torch.channels_last)
