"""Simulated interactive prompts for training (paper appendix A, "Training algorithm").

Everything here works in the model's input frame: targets and predictions are (B, 256, 256)
low-res cells (4 input pixels each), prompts are xy pixels of the 1024 x 1024 input frame.

* First prompt, with equal probability per step: one positive point drawn uniformly from the
  object, or its bounding box with noise (each coordinate + N(0, (10 % of the side)²), capped
  at 20 px). `interior_points` is the alternative first point (the trainer's
  ``first_point="interior"``): drawn uniformly from the object's core, the cells at least half
  as far from the boundary as its interior-most cell, where analysts (and the paper's
  single-point protocol) click.
* Next points: drawn uniformly from the error between the previous prediction and the target,
  positive on a false negative, negative on a false positive; an object without error gets
  a positive point inside it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_CELL = 4  # input-frame pixels per low-res cell
BOX_NOISE_FRACTION = 0.1
BOX_NOISE_MAX_PX = 20.0


def _cell_centres(flat_index: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) flat cell indices of a (H, W) grid → (B, 2) xy input-frame pixels (cell centres)."""
    rows = torch.div(flat_index, width, rounding_mode="floor")
    cols = flat_index % width
    return torch.stack([cols, rows], dim=1).float() * _CELL + (_CELL - 1) / 2


def _draw(region: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniformly drawn cell per row of (B, H, W) bool regions (each non-empty) → (B,)."""
    weights = region.flatten(1).float()
    return torch.multinomial(weights, 1, generator=generator)[:, 0]


def random_points(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, 2) xy: one point drawn uniformly inside each (B, 256, 256) bool target."""
    return _cell_centres(_draw(targets, generator), targets.shape[-1])[:, None]


def interior_points(
    targets: torch.Tensor, generator: torch.Generator, core_fraction: float = 0.5
) -> torch.Tensor:
    """(B, 1, 2) xy: one point per (B, 256, 256) bool target, drawn uniformly from its core.

    core: cells whose distance to the background (or the frame's edge) is at least
    `core_fraction` x the largest such distance in that object.
    """
    cores = []
    for target in targets.numpy():
        distance = ndimage.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1]
        cores.append(distance >= core_fraction * distance.max())
    core = torch.from_numpy(np.stack(cores)) & targets
    return _cell_centres(_draw(core, generator), targets.shape[-1])[:, None]


def noisy_boxes(
    targets: torch.Tensor, valid_hw: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """(B, 4) x0, y0, x1, y1 input-frame boxes of (B, 256, 256) bool targets, with noise.

    valid_hw: (h, w) input pixels covered by the image; boxes are clipped to it.
    """
    boxes = []
    for target in targets:
        rows = torch.nonzero(target.any(dim=1)).flatten()
        cols = torch.nonzero(target.any(dim=0)).flatten()
        boxes.append([cols[0] * _CELL, rows[0] * _CELL, cols[-1] * _CELL + 3, rows[-1] * _CELL + 3])
    box = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    sides = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=1).repeat(1, 2)
    noise = torch.randn(box.shape, generator=generator) * BOX_NOISE_FRACTION * sides
    box = box + noise.clamp(-BOX_NOISE_MAX_PX, BOX_NOISE_MAX_PX)
    h, w = valid_hw
    x = box[:, 0::2].sort(dim=1).values.clamp(0, w - 1)
    y = box[:, 1::2].sort(dim=1).values.clamp(0, h - 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], dim=1)


def error_points(
    predicted: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next corrective click per object: (B, 1, 2) xy and (B, 1) labels (1 add, 0 remove).

    predicted, targets: (B, 256, 256) bool; valid: (256, 256) bool cells inside the image.
    """
    false_neg = targets & ~predicted & valid
    false_pos = predicted & ~targets & valid
    error = false_neg | false_pos
    no_error = ~error.flatten(1).any(dim=1)
    error[no_error] = targets[no_error]  # nothing to fix: a positive point inside the object
    index = _draw(error, generator)
    positive = false_neg.flatten(1).gather(1, index[:, None])[:, 0] | no_error
    points = _cell_centres(index, targets.shape[-1])[:, None]
    return points, positive.long()[:, None]
