"""Short OpenMP spin-waits, so that a busy machine does not multiply each prompt's latency.

PyTorch splits each CPU operator across its OpenMP threads, which meet at a barrier when the
operator ends. A thread that arrives first spins before it sleeps: GNU libgomp (the OpenMP of
the PyTorch wheels for Linux) spins about 300 000 times, the Intel and LLVM runtimes 200 ms.
One prompt runs ~200 small operators through the mask decoder, so when other processes hold
the cores the waiting thread burns the time slice its partner needs. Measured on a 2-core
machine (`benchmarks/bench_latency.py`, MobileSAM, 512² EM slice, one point → 3 masks): with
two busy processes beside it, `predict` took 9.3× its quiet median (p90 9.6×); with a spin
count of 1000 it took 2.2-2.4× (p90 2.5-2.8×), while the quiet median rose 6-10 % at 512² and
stayed within 1.5 % at 1040×1388 (benchmarks/README.md, "OpenMP spin-waits"). onnxruntime
without spinning degrades as little, for the same reason.

The setting changes how idle threads wait, never how work is split: results stay bit-identical
(`tests/core/test_openmp_waits.py`). OpenMP reads it once, when the runtime library loads with
torch, so `apply()` runs when this module is imported (first of all by `sam_core`) and takes
effect only if torch has not been imported yet. A value the user set (GOMP_SPINCOUNT,
KMP_BLOCKTIME or OMP_WAIT_POLICY) is kept.
"""

from __future__ import annotations

import os
import sys

# libgomp: spin iterations before sleeping at a barrier (its own default: 300 000).
GOMP_SPINCOUNT = "1000"
# Intel / LLVM OpenMP (conda and macOS builds of torch): milliseconds of spinning before sleep
# (default 200). The same remedy; not measured here, where torch uses libgomp.
KMP_BLOCKTIME = "1"

_USER_KEYS = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")
_state = "not applied"


def apply() -> str:
    """Set short spin-waits for torch's OpenMP, if it is still possible; returns `state()`.

    Sets GOMP_SPINCOUNT and KMP_BLOCKTIME in the environment (inherited by subprocesses: CLI
    runs, Dask workers) unless the user set any of GOMP_SPINCOUNT, KMP_BLOCKTIME,
    OMP_WAIT_POLICY, or torch is already imported (OpenMP has then read its settings).
    """
    global _state
    if any(key in os.environ for key in _USER_KEYS):
        _state = "set by the user"
    elif "torch" in sys.modules:
        _state = "not applied: torch was imported before sam_core"
    else:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
        os.environ["KMP_BLOCKTIME"] = KMP_BLOCKTIME
        _state = "short spin-waits set by samscope"
    return _state


def state() -> str:
    """What `apply()` found: set by samscope, set by the user, or not applied (and why)."""
    return _state


apply()
