"""Thread counts for the predictor's small per-prompt work, chosen per call and scoped.

Why: one prompt costs the mask decoder a few dozen small operations (a 4096 x 256 image side,
7 prompt tokens). PyTorch runs each of them on all its intra-op threads, which synchronise at
an OpenMP barrier after every operation. On a machine where other processes want the CPU, one
of our threads is often descheduled, and every barrier waits a scheduler slice for it: on 2
cores with two busy processes beside it, a 28 ms prompt took 146 ms (median, p90 182 ms;
issue 16). With one thread there is no barrier to wait at: the call gets its share of a core
and degrades in proportion to the load instead.

So the predictor asks `prompt_threads` how many threads a call should use: all of PyTorch's
threads when the machine has that many idle cores, otherwise as many as are idle (at least
one). "Idle" is read from the kernel's count of runnable tasks (`/proc/loadavg`, Linux; one
thread elsewhere, the choice that never degrades badly). `scoped_threads` applies the count
for the duration of one call and restores the process's setting afterwards, also when several
threads of the process enter and leave at once, so nothing outside the call changes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

_LOADAVG = "/proc/loadavg"

_lock = threading.Lock()
_depth = 0  # calls currently inside `scoped_threads`
_saved: int | None = None  # the process's thread count before the first of them entered


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def runnable_elsewhere() -> int | None:
    """Tasks that are runnable right now other than the calling thread (None: not Linux).

    Read from the fourth field of /proc/loadavg ("running/total"), which counts the caller.
    In a container this may count the host's tasks; that only makes us choose fewer threads.
    """
    try:
        with open(_LOADAVG, encoding="ascii") as handle:
            running = int(handle.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - 1)


def prompt_threads(default: int | None = None) -> int:
    """Threads for one small decoder call: `default` (PyTorch's current count) when that many
    cores are idle, else the idle cores, at least 1 (1 where the load can't be read)."""
    limit = torch.get_num_threads() if default is None else default
    busy = runnable_elsewhere()
    if busy is None:
        return 1
    return max(1, min(limit, usable_cores() - busy))


@contextlib.contextmanager
def scoped_threads(count: int) -> Iterator[None]:
    """Run the enclosed torch work with `count` intra-op threads, then restore the setting.

    Nested or concurrent scopes (several Python threads) share the saved value: the process's
    count comes back when the last scope leaves. Raises ValueError for count < 1.
    """
    global _depth, _saved
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
        _depth += 1
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                if torch.get_num_threads() != _saved:
                    torch.set_num_threads(_saved)
                _saved = None
