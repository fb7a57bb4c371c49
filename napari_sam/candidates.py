"""The model's candidate masks for the current prompts, and which one to show first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    """The model's answer for the current prompts on one slice.

    masks: (M, H, W) bool; scores: (M,); logits: (M, 256, 256); choice: shown mask index."""

    z: int | None
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    choice: int


def default_choice(masks: np.ndarray, scores: np.ndarray, max_fraction: float = 0.9) -> int:
    """Index of the mask to show first: the best-scoring one that does not cover nearly the
    whole image (one click on a textured image often also gets a confident full-frame mask).
    masks: (M, H, W) bool; scores: (M,)."""
    fractions = masks.reshape(len(masks), -1).mean(axis=1)
    usable = np.flatnonzero(fractions <= max_fraction)
    if usable.size == 0:
        return int(np.argmax(scores))
    return int(usable[np.argmax(scores[usable])])
