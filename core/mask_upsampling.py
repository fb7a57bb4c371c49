"""Low-resolution mask logits → masks at the user's image size.

The official pipeline upsamples the 256² logits bilinearly to the whole 1024² input frame,
crops the padding away and resizes bilinearly again to the original size. We compute the same
numbers (bit for bit) while upsampling only the part of the 256² logits that survives the
crop: rows/columns of the 4x upsampled grid depend only on nearby low-res rows/columns, and
the interpolation ratio stays exactly 1/4, so a cropped first pass gives identical values.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .image_input import MODEL_INPUT_SIZE, ImageGeometry

LOW_RES = 256
_FACTOR = MODEL_INPUT_SIZE // LOW_RES


def _low_res_extent(valid: int) -> int:
    """Low-res cells needed so that the first `valid` upsampled pixels see no border clamp."""
    return min(LOW_RES, -(-valid // _FACTOR) + 1)


def upsample_logits(low_res_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(..., 256, 256) logits → (..., H, W) float32 logits at the original image size."""
    lead = low_res_logits.shape[:-2]
    x = low_res_logits.float().reshape(1, -1, LOW_RES, LOW_RES)
    h, w = geometry.input_hw
    kh, kw = _low_res_extent(h), _low_res_extent(w)
    x = F.interpolate(
        x[..., :kh, :kw], (_FACTOR * kh, _FACTOR * kw), mode="bilinear", align_corners=False
    )[..., :h, :w]
    x = F.interpolate(x, geometry.original_hw, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *geometry.original_hw)


def upsample_masks(
    low_res_logits: torch.Tensor, geometry: ImageGeometry, threshold: float = 0.0
) -> torch.Tensor:
    """(..., 256, 256) logits → (..., H, W) bool masks (logit > threshold)."""
    return upsample_logits(low_res_logits, geometry) > threshold
