"""The process's loaded models: one shared `Predictor` per (model, device, precision), each
with one lock that every model call on it holds (napari workers, two FiftyOne operators in one
App process, Dask worker threads).
"""

from __future__ import annotations

import threading
from pathlib import Path

from .predictor import Predictor
from .registry import DEFAULT_MODEL

__all__ = ["get_predictor", "is_loaded", "loaded_predictors", "predictor_lock", "use_predictor"]

_PREDICTORS: dict[tuple[str, str, str], Predictor] = {}
_LOCKS: dict[int, threading.RLock] = {}
_REGISTRY_LOCK = threading.Lock()


def _model_key(model: str) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.suffix and path.exists() else str(model)


def get_predictor(
    model: str = DEFAULT_MODEL, device: str | None = "cpu", precision: str = "fp32"
) -> Predictor:
    """The process's `Predictor` for `model` (registry name or checkpoint path) on `device`
    ("cpu", "cuda", None for the best available) at `precision`, loaded on first use.

    Load it from a worker thread (a checkpoint may be downloaded). Use it under
    `predictor_lock(predictor)`: it holds the current image.
    """
    from .device import resolve_device
    from .loading import load_model

    resolved = str(resolve_device(device))
    key = (_model_key(model), resolved, precision)
    with _REGISTRY_LOCK:
        lock = _LOCKS.setdefault(hash(key), threading.RLock())
    with lock:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            predictor = Predictor(
                load_model(model, device="cpu"), device=resolved, precision=precision
            )
            with _REGISTRY_LOCK:
                _PREDICTORS[key] = predictor
                _LOCKS[id(predictor)] = lock
        return predictor


def use_predictor(model: str, predictor: Predictor) -> None:
    """Make an already built `predictor` the one `get_predictor(model, its device, its
    precision)` returns (e.g. a model a caller loaded itself)."""
    key = (_model_key(model), str(predictor.device), predictor.precision)
    with _REGISTRY_LOCK:
        _PREDICTORS[key] = predictor
        _LOCKS.setdefault(id(predictor), threading.RLock())


def loaded_predictors() -> int:
    """How many predictors this process has loaded (e.g. one per Dask worker)."""
    with _REGISTRY_LOCK:
        return len(_PREDICTORS)


def is_loaded(model: str, device: str | None = "cpu", precision: str = "fp32") -> bool:
    """Whether `get_predictor(model, device, precision)` would return without loading."""
    from .device import resolve_device

    key = (_model_key(model), str(resolve_device(device)), precision)
    with _REGISTRY_LOCK:
        return key in _PREDICTORS


def predictor_lock(predictor: Predictor) -> threading.RLock:
    """The lock every model call on `predictor` runs under (re-entrant)."""
    with _REGISTRY_LOCK:
        return _LOCKS.setdefault(id(predictor), threading.RLock())
