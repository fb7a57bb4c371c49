"""The image as the decoder's pixel branch sees it: RGB, normalised, at the working scale.

The decoder works at the image's own resolution, except that images (or tiles) longer than
`WORK_SIDE` pixels are shrunk to that longest side first (memory and time stay bounded; the
maps are resized back). Intensities follow `sam_core.image_input` (channels, percentile
normalisation of non-uint8 data), then each image is standardised to zero mean and unit
variance over all pixels and channels, so dim and bright acquisitions look alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..image_input import as_rgb_uint8_or_float

WORK_SIDE = 1024


def work_shape(image_hw: tuple[int, int], work_side: int = WORK_SIDE) -> tuple[int, int]:
    """(H', W') the decoder works at for an (H, W) image: unchanged up to `work_side` on the
    longest side, else scaled down to it (shorter side rounded, at least 1)."""
    h, w = (int(v) for v in image_hw)
    scale = min(1.0, work_side / max(h, w))
    if scale >= 1.0:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def decoder_pixels(
    plane: np.ndarray,
    channels=None,
    normalization: str = "auto",
    work_side: int = WORK_SIDE,
) -> torch.Tensor:
    """(H, W[, C]) plane → (3, H', W') float32 standardised RGB at `work_shape`."""
    rgb = as_rgb_uint8_or_float(plane, channels, normalization).astype(np.float32)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    out_hw = work_shape(tensor.shape[-2:], work_side)
    if tuple(out_hw) != tuple(tensor.shape[-2:]):
        tensor = F.interpolate(tensor[None], size=out_hw, mode="bilinear", antialias=True)[0]
    return standardise(tensor)


def standardise(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) → zero mean, unit variance (a constant image → zeros)."""
    std = pixels.std()
    return (pixels - pixels.mean()) / (std if std > 1e-6 else 1.0)


def resize_labels(labels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) instance ids → (H', W') by nearest neighbour (ids kept, no new values)."""
    h, w = labels.shape
    if (h, w) == tuple(out_hw):
        return labels
    rows = np.minimum(((np.arange(out_hw[0]) + 0.5) * h / out_hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_hw[1]) + 0.5) * w / out_hw[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]
