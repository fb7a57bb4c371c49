"""Opt-in glibc malloc settings that remove most page-fault overhead of large temporaries.

Each encoder pass allocates hundreds of MB of short-lived activations. By default glibc serves
such blocks with fresh `mmap`s and returns them on free, so every pass page-faults its memory
in again (about a third of the CPU time of the official code on our 2-core machines). Turning
off mmap for large blocks and never trimming the heap keeps that memory mapped for reuse. This
is what the environment setting
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184`` does; this
module applies the same at run time through `mallopt`.

The cost: the process keeps its peak heap mapped (RSS does not shrink after a large pass).
`Predictor` applies it when it runs on the CPU (measured here: MobileSAM `set_image` 1.09 s →
0.72 s); set ``SAMSCOPE_KEEP_FREED_MEMORY=0`` before creating one to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**34  # 16 GiB


def allowed_by_environment() -> bool:
    """False when the user set SAMSCOPE_KEEP_FREED_MEMORY to 0/false/no/off."""
    value = os.environ.get("SAMSCOPE_KEEP_FREED_MEMORY", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the settings once; returns False where glibc's `mallopt` is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, min(_NEVER_TRIM, 2**31 - 1)) == 1
    return ok_mmap and ok_trim
