"""Where a simulated user clicks (paper §7.1 and D.1), and the box prompts of the protocols.

* First click: the interior-most pixel of the object, the maximum of its distance transform.
  The image border counts as object boundary (the mask is padded with background).
* Next click: the interior-most pixel of the error between prediction and ground truth. False
  negatives and false positives are measured separately; the click goes to whichever holds the
  pixel farthest from its region's boundary, positive for a false negative, negative for a
  false positive. This is the paper's "farthest from the boundary of the error region", so it
  lands in the thickest (usually the largest) error region. Ignored pixels are no error.
* Boxes: the tight box of the mask, optionally with the paper's box noise (appendix A: each
  coordinate moves by a normal draw with standard deviation 10 % of the box side, at most
  20 pixels).

Coordinates returned are (x, y) = (column, row) pixels, as the predictor takes them.
"""

from __future__ import annotations

import numpy as np

from ..mask_geometry import _distance_inside, interior_point
from ..mask_geometry import box_prompt as mask_box

__all__ = ["interior_point", "mask_box", "next_click", "noisy_box"]

BOX_NOISE_FRACTION = 0.1
BOX_NOISE_MAX_PX = 20.0


def next_click(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[float, float, int] | None:
    """The next corrective click: (x, y, label) with label 1 (add) or 0 (remove), or None if
    the prediction already equals the ground truth outside `ignore`.

    pred, gt, ignore: (H, W) bool.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    false_neg = gt & ~pred & valid
    false_pos = pred & ~gt & valid
    if not false_neg.any() and not false_pos.any():
        return None
    dist_fn = _distance_inside(false_neg)
    dist_fp = _distance_inside(false_pos)
    positive = dist_fn.max() >= dist_fp.max()
    distance = dist_fn if positive else dist_fp
    row, col = np.unravel_index(np.argmax(distance), distance.shape)
    return float(col), float(row), int(positive)


def noisy_box(box: np.ndarray, image_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The paper's box noise: each coordinate + N(0, (0.1 x side)²), capped at ±20 px.

    box: (4,) x0, y0, x1, y1 pixels; x coordinates use the box width as side, y the height.
    The result is kept inside the image (-0.5 … W-0.5) and non-inverted.
    """
    box = np.asarray(box, dtype=np.float64)
    width, height = box[2] - box[0], box[3] - box[1]
    sides = np.array([width, height, width, height])
    shift = rng.normal(0.0, 1.0, size=4) * BOX_NOISE_FRACTION * sides
    shift = np.clip(shift, -BOX_NOISE_MAX_PX, BOX_NOISE_MAX_PX)
    noisy = box + shift
    x0, x1 = sorted((noisy[0], noisy[2]))
    y0, y1 = sorted((noisy[1], noisy[3]))
    h, w = image_hw
    x0, x1 = np.clip([x0, x1], -0.5, w - 0.5)
    y0, y1 = np.clip([y0, y1], -0.5, h - 0.5)
    if x1 - x0 < 1.0:
        x0, x1 = max(-0.5, min(x0, x1 - 1.0)), min(w - 0.5, max(x1, x0 + 1.0))
    if y1 - y0 < 1.0:
        y0, y1 = max(-0.5, min(y0, y1 - 1.0)), min(h - 0.5, max(y1, y0 + 1.0))
    return np.array([x0, y0, x1, y1])
