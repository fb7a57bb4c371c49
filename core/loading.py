"""`load_model`: a registry name or a checkpoint path → a ready `SamModel`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoints import resolve_checkpoint
from .device import resolve_device
from .errors import CheckpointError
from .modeling.sam import ARCHITECTURES, SamModel, build_sam
from .registry import DEFAULT_MODEL, get_spec
from .state_dicts import read_state_dict

_LISTED_KEYS = 5


def infer_architecture(state_dict: dict[str, torch.Tensor]) -> str:
    """Which of vit_t/b/l/h a state dict belongs to, from its keys and shapes."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state_dict:
        return "vit_t"
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        by_width = {cfg.embed_dim: name for name, cfg in ARCHITECTURES.items() if cfg.embed_dim}
        if patch.shape[0] in by_width:
            return by_width[patch.shape[0]]
    raise CheckpointError(
        "can't tell the architecture of this checkpoint: it has no SAM image encoder keys "
        "(image_encoder.patch_embed...). Is it a SAM checkpoint? Pass arch='vit_b' (or vit_t, "
        "vit_l, vit_h) to load it anyway and see which keys differ."
    )


def _describe_mismatch(model: SamModel, state_dict: dict[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape
    )
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:_LISTED_KEYS]) + (" ..." if len(keys) > _LISTED_KEYS else "")
            parts.append(f"{len(keys)} {label} keys ({shown})")
    if wrong_shape:
        shown = ", ".join(
            f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
            for k in wrong_shape[:_LISTED_KEYS]
        )
        parts.append(f"{len(wrong_shape)} keys with other shapes ({shown})")
    return "; ".join(parts) if parts else None


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    device: str | torch.device | None = "cpu",
    arch: str | None = None,
) -> SamModel:
    """Load a SAM model in eval mode.

    name_or_path: a registry name ("vit_t" MobileSAM, "vit_b", "vit_l", "vit_h"; fetched and
        hash-checked on first use, see `samscope models`) or the path of a checkpoint file in
        the official format (e.g. a fine-tuned model).
    device: where to put it ("cpu", "cuda", None for the best available).
    arch: architecture of a checkpoint file; inferred from its keys when None.

    The returned model carries `.name` (registry name or file path), `.arch` and
    `.checkpoint_sha256` (None for user files until `weights_fingerprint` computes it).
    """
    registry_name, path = resolve_checkpoint(name_or_path)
    state_dict = read_state_dict(path)
    if registry_name is not None:
        spec = get_spec(registry_name)
        expected_arch = registry_name
        if arch is not None and arch != expected_arch:
            raise CheckpointError(f"model {registry_name!r} is {expected_arch}, not {arch}")
        arch = expected_arch
        sha256: str | None = spec.sha256
    else:
        arch = arch or infer_architecture(state_dict)
        sha256 = None
    model = build_sam(arch)
    problem = _describe_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"{path} does not fit the {arch} architecture: {problem}")
    model.load_state_dict(state_dict, strict=True)
    model.name = registry_name or str(path)
    model.checkpoint_path = Path(path)
    model.checkpoint_sha256 = sha256
    return model.to(resolve_device(device)).eval()


def weights_fingerprint(model: SamModel) -> str:
    """SHA-256 of the checkpoint file a model was loaded from (computed once, then kept)."""
    if getattr(model, "checkpoint_sha256", None) is None:
        from .checkpoints import sha256_of

        path = getattr(model, "checkpoint_path", None)
        if path is None:
            raise ValueError("this model was not loaded from a checkpoint file")
        model.checkpoint_sha256 = sha256_of(path)
    return model.checkpoint_sha256
