"""Full-image masks → FiftyOne detections (mask cropped to its own box), and back.

FiftyOne stores an instance mask as a 2-D array covering the detection's bounding box, and the
box as ``[x, y, w, h]`` relative to the image size (0–1). Masks whose box exceeds
`DISK_MASK_PIXELS` are written as PNG files and referenced by ``mask_path`` so that large
masks do not bloat the database documents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np
from PIL import Image

# Box-sized masks above this many pixels (e.g. 256×256) go to disk instead of the document.
DISK_MASK_PIXELS = 256 * 256


def mask_box_xyxy(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box of a (H, W) bool mask: (x0, y0, x1, y1) px, x1/y1 exclusive; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_to_detection(
    mask: np.ndarray,
    label: str | None = None,
    mask_file: str | os.PathLike[str] | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
    **attributes: Any,
) -> fo.Detection | None:
    """One full-image mask (H, W) bool → `fo.Detection` with its mask cropped to the tight box.

    mask_file: where to write the crop as a 0/255 PNG when it has more than `disk_mask_pixels`
    pixels (the detection then holds ``mask_path``); None keeps every mask in the document.
    attributes: extra detection attributes (predicted_iou, stability_score, prompt info, ...).
    Returns None for an empty mask (there is no box to give it).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    box = mask_box_xyxy(mask)
    if box is None:
        return None
    height, width = mask.shape
    x0, y0, x1, y1 = box
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
    bounding_box = [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]
    if "predicted_iou" in attributes:
        # FiftyOne ranks predictions by confidence (mAP, PR curves): use the predicted IoU.
        attributes.setdefault("confidence", float(attributes["predicted_iou"]))
    detection = fo.Detection(label=label, bounding_box=bounding_box, **attributes)
    if mask_file is not None and crop.size > disk_mask_pixels:
        path = Path(mask_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.png")
        Image.fromarray(crop.astype(np.uint8) * 255).save(tmp)
        os.replace(tmp, path)
        detection.mask_path = str(path.resolve())
    else:
        detection.mask = crop
    return detection


def detection_to_mask(detection: fo.Detection, image_hw: tuple[int, int]) -> np.ndarray:
    """Paste a detection's instance mask (in the document or at ``mask_path``) into a full
    (H, W) bool image; a detection without a mask gives its filled box."""
    height, width = image_hw
    x, y, w, h = detection.bounding_box
    x0, y0 = round(x * width), round(y * height)
    x1, y1 = min(width, round((x + w) * width)), min(height, round((y + h) * height))
    full = np.zeros((height, width), dtype=bool)
    crop = detection.get_mask() if detection.has_mask else None
    if crop is None:
        full[y0:y1, x0:x1] = True
        return full
    crop = np.asarray(crop) > 0
    if crop.shape != (y1 - y0, x1 - x0):
        # Boxes from other tools may not match the crop size exactly: resize nearest.
        resized = Image.fromarray(crop.astype(np.uint8) * 255).resize(
            (max(1, x1 - x0), max(1, y1 - y0)), Image.NEAREST
        )
        crop = np.asarray(resized) > 0
    full[y0:y1, x0:x1] = crop[: y1 - y0, : x1 - x0]
    return full


def records_to_detections(
    records: Iterable[Mapping[str, Any]],
    mask_dir: str | os.PathLike[str] | None = None,
    stem: str = "mask",
    label: str = "object",
    disk_mask_pixels: int = DISK_MASK_PIXELS,
) -> fo.Detections:
    """Automatic-mask records (``segmentation`` (H, W) bool, ``predicted_iou``,
    ``stability_score``, ``point_coords`` [[x, y]] px, ...) → `fo.Detections`.

    Masks larger than `disk_mask_pixels` go to ``<mask_dir>/<stem>_<i>.png`` (if mask_dir).
    """
    detections = []
    for index, record in enumerate(records):
        segmentation = record["segmentation"]
        if isinstance(segmentation, dict):
            raise ValueError("records must hold binary masks (output_mode='binary_mask')")
        mask_file = None if mask_dir is None else Path(mask_dir) / f"{stem}_{index:04d}.png"
        detection = mask_to_detection(
            segmentation,
            label=label,
            mask_file=mask_file,
            disk_mask_pixels=disk_mask_pixels,
            predicted_iou=float(record["predicted_iou"]),
            stability_score=float(record["stability_score"]),
            prompt_points=[[float(v) for v in p] for p in record.get("point_coords", [])],
            prompt_labels=[1] * len(record.get("point_coords", [])),
            area=int(record.get("area", int(np.count_nonzero(segmentation)))),
        )
        if detection is not None:
            detections.append(detection)
    return fo.Detections(detections=detections)
