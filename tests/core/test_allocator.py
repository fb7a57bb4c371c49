"""The opt-out of the malloc setting is honoured."""

from __future__ import annotations

import platform

import pytest

from sam_core import allocator


@pytest.mark.parametrize(("value", "allowed"), [("0", False), ("off", False), ("1", True)])
def test_environment_opt_out(monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool) -> None:
    monkeypatch.setenv("SAMSCOPE_KEEP_FREED_MEMORY", value)
    assert allocator.allowed_by_environment() is allowed


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc() -> None:
    assert allocator.keep_freed_memory() is True
