"""The model's candidate masks for the current prompts (which one is shown first is core's
rule, `sam_core.mask_geometry.best_mask_index`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_core.mask_geometry import best_mask_index as default_choice

__all__ = ["Candidates", "default_choice"]


@dataclass
class Candidates:
    """The model's answer for the current prompts on one slice.

    masks: (M, H, W) bool; scores: (M,); logits: (M, 256, 256); choice: shown mask index;
    record: the `sam_core.provenance.MaskProvenance` of mask `choice` as computed (the commit
    adjusts its mask index), None when unknown."""

    z: int | None
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    choice: int
    record: object | None = None
