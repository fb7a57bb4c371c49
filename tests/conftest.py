"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder next to the repository (reference data, datasets)."""
    path = (Path(__file__).parents[1] / ".." / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} does not exist")
    return path


@pytest.fixture(scope="session")
def mobilesam_checkpoint() -> Path:
    """Path of the real MobileSAM (vit_t) weights, fetched once per machine into the default
    cache (``$SAMSCOPE_CACHE_DIR`` if set) and reused by later sessions."""
    from sam_core.checkpoints import fetch_checkpoint

    if os.environ.get("SAMSCOPE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        from sam_core.checkpoints import cached_path

        path = cached_path("vit_t")
        if path is None:
            pytest.skip("SAMSCOPE_OFFLINE is set and vit_t is not cached")
        return path
    return fetch_checkpoint("vit_t", progress=False)
