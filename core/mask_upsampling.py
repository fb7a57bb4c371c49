"""Low-resolution mask logits → masks at the user's image size.

The official pipeline upsamples the 256² logits bilinearly to the whole 1024² input frame,
crops the padding away and resizes bilinearly again to the original size. We compute the same
numbers (bit for bit) while upsampling only the part of the 256² logits that survives the
crop: rows/columns of the 4x upsampled grid depend only on nearby low-res rows/columns, and
the interpolation ratio stays exactly 1/4, so a cropped first pass gives identical values.

Many masks at once (a batch of 200 boxes on a 2048² image) would need gigabytes of float32
temporaries; `upsample_to_numpy` upsamples a few masks at a time into a preallocated output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .image_input import MODEL_INPUT_SIZE, ImageGeometry

LOW_RES = 256
_FACTOR = MODEL_INPUT_SIZE // LOW_RES
# Budget of one chunk's float32 temporaries in `upsample_to_numpy`, in bytes (~96 MiB: six
# masks of a 2048² image, 24 of a 1024² one). Read at call time, so tests can shrink it.
UPSAMPLE_CHUNK_BYTES = 96 * 2**20


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


def masks_per_chunk(geometry: ImageGeometry, chunk_bytes: int | None = None) -> int:
    """How many masks `upsample_to_numpy` upsamples together (at least 1).

    Counts the float32 temporaries of one mask: the first pass at the input size (h, w) plus
    the result at the original size (H, W); `chunk_bytes` defaults to `UPSAMPLE_CHUNK_BYTES`.
    """
    budget = UPSAMPLE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    (h, w), (big_h, big_w) = geometry.input_hw, geometry.original_hw
    per_mask = 4 * (_FACTOR * _low_res_extent(h) * _FACTOR * _low_res_extent(w) + big_h * big_w)
    return max(1, int(budget) // per_mask)


def upsample_to_numpy(
    low_res_logits: torch.Tensor,
    geometry: ImageGeometry,
    return_logits: bool = False,
    threshold: float = 0.0,
    chunk_bytes: int | None = None,
) -> np.ndarray:
    """(..., 256, 256) logits → (..., H, W) numpy masks, a chunk of masks at a time.

    Returns bool masks (logit > threshold), or float32 logits if `return_logits`; the values
    are bit-identical to `upsample_logits` / `upsample_masks` on the whole batch. The output
    array is allocated once, so peak memory is the output plus one chunk's float32
    temporaries (about `chunk_bytes`, default `UPSAMPLE_CHUNK_BYTES`; see `masks_per_chunk`).
    """
    lead = tuple(low_res_logits.shape[:-2])
    flat_in = low_res_logits.reshape(-1, LOW_RES, LOW_RES)
    dtype = np.float32 if return_logits else np.bool_
    output = np.empty((flat_in.shape[0], *geometry.original_hw), dtype=dtype)
    step = masks_per_chunk(geometry, chunk_bytes)
    on_cpu = low_res_logits.device.type == "cpu"
    for start in range(0, flat_in.shape[0], step):
        logits = upsample_logits(flat_in[start : start + step], geometry)
        target = output[start : start + step]
        if return_logits:
            target[...] = logits.cpu().numpy()
        elif on_cpu:  # no bool temporary; numpy's comparison is ~1.5x faster than torch.gt's
            np.greater(logits.detach().numpy(), threshold, out=target)
        else:
            target[...] = (logits > threshold).cpu().numpy()
        del logits
    return output.reshape(*lead, *geometry.original_hw)
