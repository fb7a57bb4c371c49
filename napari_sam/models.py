"""One `Predictor` per model name, shared by the widgets, with a lock around model calls.

A Predictor holds the current image, so two threads must not use it at once: every model
call in the plugin runs inside `with predictor_lock(name):`.
"""

from __future__ import annotations

import threading

from sam_core import Predictor, load_model

_predictors: dict[str, Predictor] = {}
_locks: dict[str, threading.RLock] = {}
_registry_lock = threading.Lock()


def predictor_lock(name: str) -> threading.RLock:
    with _registry_lock:
        return _locks.setdefault(name, threading.RLock())


def get_predictor(name: str) -> Predictor:
    """Load (once, in the calling thread: call from a worker) and return the model's Predictor.

    name: registry name (vit_t, vit_b, ...) or a checkpoint path. CPU unless a GPU exists.
    """
    with predictor_lock(name):
        if name not in _predictors:
            _predictors[name] = Predictor(load_model(name), device=None)
        return _predictors[name]


def is_loaded(name: str) -> bool:
    return name in _predictors


def use_predictor(name: str, predictor: Predictor) -> None:
    """Make an already built Predictor the one used for `name` (e.g. a model the caller
    loaded itself, or a GPU predictor)."""
    with predictor_lock(name):
        _predictors[name] = predictor
