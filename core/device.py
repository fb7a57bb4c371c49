"""Device and numeric-precision choices for running the model."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None` or "auto" picks CUDA, then Apple MPS, then CPU; anything else is taken as given."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return resolved


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), read from cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust torch's own dispatch level
        return "AVX512" in torch.backends.cpu.get_cpu_capability()
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def check_precision(precision: str, device: torch.device) -> Precision:
    """Validate a precision name for `device`.

    fp16 needs a GPU. bf16 on a CPU without native bf16 (e.g. AVX2-only) is emulated and
    several times slower than fp32: allowed, with a warning.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use 'bf16' (or 'fp32')")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and several times "
            "slower than fp32 here; use precision='fp32'",
            RuntimeWarning,
            stacklevel=3,
        )
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Mixed-precision region for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield
