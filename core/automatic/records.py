"""Output formats: official-style records, COCO RLE, and a non-overlapping label image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from ..mask_geometry import decode_rle, encode_rle

__all__ = [
    "OUTPUT_MODES",
    "decode_segmentation",
    "encode_rle",
    "encode_rle_cropped",
    "full_mask",
    "masks_to_label_image",
]

OutputMode = str  # "binary_mask" | "coco_rle" | "cropped_mask"
OUTPUT_MODES = ("binary_mask", "coco_rle", "cropped_mask")


def full_mask(local: np.ndarray, box_xyxy: Sequence[int], image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool image with the bbox-local mask pasted at its box."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    out = np.zeros(image_hw, dtype=bool)
    out[y0:y1, x0:x1] = local
    return out


def encode_rle_cropped(
    local: np.ndarray, box_xyxy: Sequence[int], image_hw: tuple[int, int]
) -> dict:
    """COCO RLE of a full (H, W) mask given only its bbox-local part, without building the
    full mask: the runs of the box's columns (padded to full height), plus the all-zero columns
    before and after. Same result as `encode_rle(full_mask(...))`; memory is H × box width."""
    h, w = (int(v) for v in image_hw)
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    columns = np.zeros((x1 - x0, h), dtype=np.uint8)  # column-major order of the box's columns
    columns[:, y0:y1] = np.asarray(local, dtype=bool).T
    flat = columns.ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    lead, trail = x0 * h, (w - x1) * h
    if flat.size == 0 or flat[0]:  # counts start with a (possibly empty) run of zeros
        counts = [lead, *runs.tolist()]
    else:
        counts = [lead + int(runs[0]), *runs[1:].tolist()]
    if flat.size and not flat[-1]:
        counts[-1] += trail
    elif trail:
        counts.append(trail)
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(record: dict, image_hw: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """A record's mask as (local bool mask, (x0, y0, x1, y1) box) whatever its output mode."""
    seg = record["segmentation"]
    x, y, w, h = (int(v) for v in record["bbox"])
    box = (x, y, x + w, y + h)
    if isinstance(seg, dict):
        return decode_rle(seg)[y : y + h, x : x + w], box
    seg = np.asarray(seg, dtype=bool)
    if seg.shape == tuple(image_hw) and (h, w) != tuple(image_hw):
        return seg[y : y + h, x : x + w], box
    return seg, box


def masks_to_label_image(
    records: Sequence[dict], image_hw: tuple[int, int], order: str = "area"
) -> np.ndarray:
    """(H, W) uint32 label image: pixel value i + 1 belongs to records[i], 0 is background.

    Where masks overlap, one must win. order="area" (default) paints large masks first, so a
    smaller mask nested in a larger one (a nucleus in a cell) stays visible; order="iou" lets the
    mask with the higher predicted IoU win. A mask fully covered by others loses its id.
    """
    labels = np.zeros(tuple(image_hw), dtype=np.uint32)
    if order == "area":
        paint = sorted(range(len(records)), key=lambda i: -int(records[i]["area"]))
    elif order == "iou":
        paint = sorted(range(len(records)), key=lambda i: float(records[i]["predicted_iou"]))
    else:
        raise ValueError(f"order must be 'area' or 'iou', got {order!r}")
    for i in paint:
        local, (x0, y0, x1, y1) = decode_segmentation(records[i], image_hw)
        labels[y0:y1, x0:x1][local] = i + 1
    return labels
