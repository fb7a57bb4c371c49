"""Mask geometry used everywhere in samscope: boxes, interior points, IoU, RLE, best-of-3.

Conventions (the ones SAM's papers and COCO use):

* Masks are (H, W) bool arrays; points are (x, y) = (column, row) pixels.
* `bounding_box` is the crop box in numpy slicing order's terms, ints, end-exclusive:
  ``mask[y0:y1, x0:x1]`` holds every true pixel. COCO's ``bbox`` is (x0, y0, x1 - x0, y1 - y0).
* `box_prompt` is the box *prompt* of a mask as the paper's evaluation simulates it: the first
  and last pixel's centres (x0, y0, x1, y1) floats, widened by half a pixel per side where the
  mask is one pixel thin (a zero-area box is no valid prompt).
* `interior_point` is the pixel farthest from the mask's boundary (the image border counts as
  boundary): the paper's first simulated click (appendix D.1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "best_mask_index",
    "bounding_box",
    "box_prompt",
    "decode_rle",
    "encode_rle",
    "interior_point",
    "interior_points",
    "mask_iou",
]

# One click on a textured image often also gets a confident mask of nearly the whole frame.
FULL_FRAME_FRACTION = 0.9


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) ints, end-exclusive, of the true pixels of (H, W) `mask`; None if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_prompt(mask: np.ndarray) -> np.ndarray:
    """(4,) float64 x0, y0, x1, y1: the paper's box prompt of a non-empty (H, W) mask.

    Raises:
        ValueError: the mask is empty.
    """
    bounds = bounding_box(mask)
    if bounds is None:
        raise ValueError("box of an empty mask")
    x0, y0, x1, y1 = bounds
    box = np.array([x0, y0, x1 - 1, y1 - 1], dtype=np.float64)
    for lo, hi in ((0, 2), (1, 3)):
        if box[hi] <= box[lo]:
            box[lo] -= 0.5
            box[hi] += 0.5
    return box


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of a non-empty (H, W) mask farthest from its boundary; ties go to
    the first such pixel in row-major order.

    Raises:
        ValueError: the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("interior_point of an empty mask")
    row, col = np.unravel_index(np.argmax(_distance_inside(mask)), mask.shape)
    return float(col), float(row)


def interior_points(mask: np.ndarray, n_points: int = 1) -> np.ndarray:
    """(N, 2) xy of the interior-most pixel of each of the N largest connected parts of
    (H, W) `mask` (N <= n_points; (0, 2) for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros((0, 2), dtype=np.float64)
    distance = _distance_inside(mask)
    parts, n_parts = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, parts, index=np.arange(1, n_parts + 1))
    largest = np.argsort(-sizes, kind="stable")[: max(1, n_points)] + 1
    positions = ndimage.maximum_position(distance, parts, index=largest)
    return np.array([[x, y] for y, x in positions], dtype=np.float64)


def mask_iou(a: np.ndarray, b: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two (H, W) masks, `ignore`d pixels left out; 0.0 when both
    are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        a, b = a & keep, b & keep
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def best_mask_index(
    masks: np.ndarray, scores: np.ndarray, max_fraction: float = FULL_FRAME_FRACTION
) -> int:
    """Which of SAM's candidate masks (M, H, W) answers a prompt: the highest predicted IoU
    among masks covering at most `max_fraction` of the image (all of them if none does)."""
    masks = np.asarray(masks)
    scores = np.asarray(scores)
    fractions = masks.reshape(len(masks), -1).mean(axis=1)
    usable = np.flatnonzero(fractions <= max_fraction)
    if usable.size == 0:
        return int(np.argmax(scores))
    return int(usable[np.argmax(scores[usable])])


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool → COCO RLE {"size": [H, W], "counts": str} (pycocotools, column-major)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (counts as str or bytes) → (H, W) bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    encoded = {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(encoded).astype(bool)
