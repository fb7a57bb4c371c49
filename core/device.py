"""Device and numeric-precision choices for running the model."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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


# cpuinfo flags that mean bf16 arithmetic in hardware: x86 AVX512-BF16 and AMX (bf16 tiles),
# Arm's BF16 extension (listed as "bf16" in the Features line).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class Bf16Support:
    """What this CPU offers for bf16.

    native: bf16 runs in hardware (one of `NATIVE_BF16_FLAGS`); without it PyTorch emulates
        bf16 with fp32 arithmetic plus conversions, several times slower than plain fp32.
    flags: the native-bf16 flags found; capability: torch's CPU dispatch level ("AVX2",
        "AVX512", ...); source: where the flags came from ("/proc/cpuinfo" or "torch").
    """

    native: bool
    flags: tuple[str, ...]
    capability: str
    source: str

    def describe(self) -> str:
        found = ", ".join(self.flags) if self.flags else "no AVX512-BF16/AMX-BF16/BF16 flag"
        kind = "native" if self.native else "emulated"
        return f"bf16 {kind} ({found}; torch CPU capability {self.capability}, from {self.source})"


def native_bf16_flags(cpuinfo: str) -> tuple[str, ...]:
    """The `NATIVE_BF16_FLAGS` on the "flags" (x86) or "Features" (Arm) lines of a
    /proc/cpuinfo text, in that order; whole words only ("bf16" is not "avx512_bf16")."""
    words: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in words)


@functools.cache
def bf16_support() -> Bf16Support:
    """Detect native bf16 once per process (see `Bf16Support`).

    Linux: the cpuinfo flags. Elsewhere: torch's own view, `torch.backends.cpu`
    `get_cpu_capability()` at "AVX512" or above on x86 together with oneDNN's bf16 support
    (`torch.backends.mkldnn`), else not native.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        flags = native_bf16_flags(Path("/proc/cpuinfo").read_text())
        return Bf16Support(bool(flags), flags, capability, "/proc/cpuinfo")
    except OSError:  # not Linux
        mkldnn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        native = "AVX512" in capability and bool(mkldnn and mkldnn())
        return Bf16Support(native, (), capability, "torch")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16, AMX or Arm BF16)."""
    return bf16_support().native


def check_precision(precision: str, device: torch.device) -> Precision:
    """Validate a precision name for `device`.

    fp16 needs a GPU. bf16 on a CPU without native bf16 (e.g. AVX2-only) is emulated and
    several times slower than fp32: allowed when asked for, with a warning. Nothing in
    samscope picks bf16 by itself; where the CPU has it natively, `precision="bf16"` is
    offered (about 1.2x faster MobileSAM encoding, embedding cosine 0.9999 to fp32).
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use 'bf16' (or 'fp32')")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            f"this CPU has no native bf16 ({bf16_support().describe()}): bf16 is emulated and "
            "several times slower than fp32 here; use precision='fp32'",
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
