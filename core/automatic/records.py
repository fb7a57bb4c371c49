"""Output formats: official-style records, COCO RLE, and a non-overlapping label image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

OutputMode = str  # "binary_mask" | "coco_rle" | "cropped_mask"
OUTPUT_MODES = ("binary_mask", "coco_rle", "cropped_mask")


def full_mask(local: np.ndarray, box_xyxy: Sequence[int], image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool image with the bbox-local mask pasted at its box."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    out = np.zeros(image_hw, dtype=bool)
    out[y0:y1, x0:x1] = local
    return out


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool → COCO RLE {"size": [H, W], "counts": str} (pycocotools, column-major)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(record: dict, image_hw: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """A record's mask as (local bool mask, (x0, y0, x1, y1) box) whatever its output mode."""
    seg = record["segmentation"]
    x, y, w, h = (int(v) for v in record["bbox"])
    box = (x, y, x + w, y + h)
    if isinstance(seg, dict):
        counts = seg["counts"]
        counts = counts.encode() if isinstance(counts, str) else counts
        rle = {"size": seg["size"], "counts": counts}
        full = mask_utils.decode(rle).astype(bool)
        return full[y : y + h, x : x + w], box
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
