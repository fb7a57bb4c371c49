"""Full-resolution logits of one low-res mask, computed only where they matter.

The predictor's upsampling (256² → the 1024 frame, crop the padding, → original size) is two
separable bilinear maps, so full-resolution logits are `rows @ low_res @ cols.T` with `rows`
(H, 256) and `cols` (W, 256) interpolation matrices (taken from `F.interpolate` itself, so the
weights are PyTorch's). Bilinear weights are a convex combination, so a full-resolution logit
can exceed a threshold only where one of the low-res cells it reads does: we evaluate just the
window of pixels that read such cells. A 30-pixel nucleus costs a few thousand multiply-adds,
not an upsampling of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..image_input import MODEL_INPUT_SIZE, ImageGeometry

LOW_RES = 256


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float64 weights of PyTorch's 1-D bilinear resize (no corner align)."""
    eye = torch.eye(size_in, dtype=torch.float64).reshape(1, size_in, size_in, 1)
    out = F.interpolate(eye, size=(size_out, 1), mode="bilinear", align_corners=False)
    return out[0, :, :, 0].T.numpy()


def axis_matrix(valid_input: int, original: int) -> np.ndarray:
    """(original, 256) float32: low-res cells → original pixels along one axis.

    valid_input: pixels of this axis inside the 1024 frame (the rest is padding).
    """
    up = _resize_matrix(LOW_RES, MODEL_INPUT_SIZE)[:valid_input]  # (valid_input, 256)
    down = _resize_matrix(valid_input, original)  # (original, valid_input)
    return (down @ up).astype(np.float32)


def _support(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last low-res index with a non-zero weight, per output pixel (non-decreasing)."""
    nonzero = matrix != 0
    first = nonzero.argmax(axis=1)
    last = matrix.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
    return first, last


@dataclass
class LogitWindow:
    """Full-resolution logits (h, w) float32 whose top-left pixel is (y0, x0) in the image."""

    logits: np.ndarray
    y0: int
    x0: int


class WindowedUpsampler:
    """Evaluates full-resolution logits of low-res masks of one image (or crop) in windows."""

    def __init__(self, geometry: ImageGeometry) -> None:
        (h, w), (oh, ow) = geometry.input_hw, geometry.original_hw
        self.rows = axis_matrix(h, oh)
        self.cols = axis_matrix(w, ow)
        self._row_first, self._row_last = _support(self.rows)
        self._col_first, self._col_last = _support(self.cols)

    def window(self, low_res: np.ndarray, floor: float) -> LogitWindow | None:
        """Logits of `low_res` (256, 256) on every pixel that can exceed `floor` (None: no pixel).

        Pixels outside the window are guaranteed to be <= floor.
        """
        above = low_res > floor
        rows_any = above.any(axis=1)
        if not rows_any.any():
            return None
        cols_any = above.any(axis=0)
        r0, r1 = _first_last(rows_any)
        c0, c1 = _first_last(cols_any)
        ys, ye = _pixel_span(self._row_first, self._row_last, r0, r1)
        xs, xe = _pixel_span(self._col_first, self._col_last, c0, c1)
        if ys >= ye or xs >= xe:
            return None
        lr0, lr1 = self._row_first[ys], self._row_last[ye - 1] + 1
        lc0, lc1 = self._col_first[xs], self._col_last[xe - 1] + 1
        block = low_res[lr0:lr1, lc0:lc1]
        logits = self.rows[ys:ye, lr0:lr1] @ block @ self.cols[xs:xe, lc0:lc1].T
        return LogitWindow(logits, ys, xs)


def _first_last(flags: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(flags)
    return int(idx[0]), int(idx[-1])


def _pixel_span(first: np.ndarray, last: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Pixels [start, stop) that read any low-res index in [lo, hi]."""
    start = int(np.searchsorted(last, lo, side="left"))
    stop = int(np.searchsorted(first, hi, side="right"))
    return start, stop
