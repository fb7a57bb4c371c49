"""Reading checkpoint files safely: `torch.load(weights_only=True)` and nothing else.

Every way a file can be wrong (missing, empty, truncated, a pickle of Python objects, not a
mapping of names to tensors) becomes a `CheckpointError` that says which.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import CheckpointError

# Keys under which training checkpoints commonly nest the model's state dict.
_STATE_DICT_WRAPPERS = ("model", "state_dict")


def _load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``, its failures mapped to CheckpointError."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    except Exception as exc:  # torch raises many types for damaged files
        message = str(exc)
        detail = message.split("WeightsUnpickler error:", 1)[-1].strip()
        detail = detail.splitlines()[0].split(" Please use", 1)[0].rstrip(".") if detail else ""
        if "Weights only load failed" in message and "Unsupported operand" not in message:
            raise CheckpointError(
                f"refusing to load {path}: it contains non-tensor Python objects, which could "
                f"run arbitrary code when loaded, so it is refused for safety (torch.load with "
                f"weights_only=True said: {detail}). If you trust the file, re-save its weights "
                "as a plain state dict: torch.save(model.state_dict(), path)."
            ) from exc
        if "Weights only load failed" in message:  # a byte stream that is no valid pickle
            message = f"not a torch.save file ({detail})"
        summary = message.split(". ", 1)[0][:200]  # torch's first sentence says it
        raise CheckpointError(
            f"truncated or corrupt checkpoint {path}: {type(exc).__name__}: {summary}"
        ) from exc


def _unwrap(obj: object) -> object:
    """``{"model": sd}`` / ``{"state_dict": sd}`` (training checkpoints) -> ``sd``."""
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _STATE_DICT_WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
    return obj


def _check_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} is not a state dict: it holds a {type(obj).__name__}, expected a mapping "
            "of parameter names to tensors"
        )
    if not obj:
        raise CheckpointError(f"{path} is an empty state dict: it holds no tensors")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} is not a state dict of tensors: entry {key!r} is a "
                f"{type(value).__name__} (keys must be str and values tensors)"
            )
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a checkpoint file as ``{parameter name: tensor}``, safely.

    Only ``torch.load(path, map_location="cpu", weights_only=True)`` is used, so a checkpoint
    can never run code. A training checkpoint wrapping the weights as ``{"model": sd}`` or
    ``{"state_dict": sd}`` is unwrapped.

    Raises:
        CheckpointError: the file is missing, empty, truncated or corrupt; holds Python objects
            other than tensors and plain containers (refused for safety); or is not a mapping
            of str to tensors.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"truncated or corrupt checkpoint {path}: the file is empty")
    return _check_state_dict(_unwrap(_load(path)), path)
