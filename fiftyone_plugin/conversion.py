"""Masks → FiftyOne detections (mask cropped to its own box), and back.

Masks arrive box-local where they can (automatic masks as ``cropped_mask`` records, prompted
masks cut to their tight box right after prediction), so no full-image mask is kept per object.

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

from sam_core.automatic import decode_segmentation
from sam_core.image_io import write_mask_png
from sam_core.mask_geometry import bounding_box

# Box-sized masks above this many pixels (e.g. 256×256) go to disk instead of the document.
DISK_MASK_PIXELS = 256 * 256


def crop_to_box(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """A (H, W) mask cut to its tight box: (local (h, w) bool copy, (x0, y0, x1, y1) px, x1/y1
    exclusive), or None if the mask is empty. Call it right after prediction, so that only
    the box-sized part is kept.

    Raises:
        ValueError: the mask is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    box = bounding_box(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return np.array(mask[y0:y1, x0:x1], dtype=bool), box


def mask_to_detection(
    mask: np.ndarray,
    label: str | None = None,
    mask_file: str | os.PathLike[str] | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
    **attributes: Any,
) -> fo.Detection | None:
    """One full-image mask (H, W) bool → `fo.Detection` with its mask cropped to the tight box
    (see `local_mask_to_detection`). Returns None for an empty mask."""
    cropped = crop_to_box(mask)
    if cropped is None:
        return None
    local, (x0, y0, _, _) = cropped
    return local_mask_to_detection(
        local, (x0, y0), np.shape(mask), label, mask_file, disk_mask_pixels, **attributes
    )


def local_mask_to_detection(
    local: np.ndarray,
    offset_xy: tuple[int, int],
    image_hw: tuple[int, int],
    label: str | None = None,
    mask_file: str | os.PathLike[str] | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
    **attributes: Any,
) -> fo.Detection | None:
    """A box-local mask → `fo.Detection`, never building the full-image mask.

    local: (h, w) bool mask whose top-left pixel is at `offset_xy` (x0, y0) px of an image of
    `image_hw` (H, W) px; it is trimmed to its tight box. mask_file: where to write the crop
    as a 0/255 PNG when it has more than `disk_mask_pixels` pixels (the detection then holds
    ``mask_path``); None keeps every mask in the document. attributes: extra detection
    attributes (predicted_iou, stability_score, prompt info, ...).
    Returns None for an empty mask (there is no box to give it).
    """
    cropped = crop_to_box(local)
    if cropped is None:
        return None
    crop, (bx0, by0, bx1, by1) = cropped
    height, width = (int(v) for v in image_hw)
    x0, y0 = int(offset_xy[0]) + bx0, int(offset_xy[1]) + by0
    x1, y1 = int(offset_xy[0]) + bx1, int(offset_xy[1]) + by1
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"mask box {(x0, y0, x1, y1)} lies outside the {width}x{height} image")
    bounding_box = [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]
    if "predicted_iou" in attributes:
        # FiftyOne ranks predictions by confidence (mAP, PR curves): use the predicted IoU.
        attributes.setdefault("confidence", float(attributes["predicted_iou"]))
    detection = fo.Detection(label=label, bounding_box=bounding_box, **attributes)
    if mask_file is not None and crop.size > disk_mask_pixels:
        path = Path(mask_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mask_png(path, crop)
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
    image_hw: tuple[int, int],
    mask_dir: str | os.PathLike[str] | None = None,
    stem: str = "mask",
    label: str = "object",
    disk_mask_pixels: int = DISK_MASK_PIXELS,
    provenance: list[dict] | None = None,
) -> fo.Detections:
    """Automatic-mask records of an image of `image_hw` (H, W) px → `fo.Detections`.

    records: as `AutomaticMaskGenerator.select` returns them: ``segmentation`` (best the
    box-local mask of ``output_mode="cropped_mask"``; full masks and RLE are cut to their box),
    ``bbox`` [x, y, w, h] px, ``predicted_iou``, ``stability_score``, ``point_coords`` [[x, y]]
    px, ``area``. Masks larger than `disk_mask_pixels` go to ``<mask_dir>/<stem>_<i>.png``
    (if mask_dir). provenance: one record dict per record (`sam_core.provenance`), kept as
    the detection's ``samscope_provenance``.
    """
    detections = []
    for index, record in enumerate(records):
        local, (x0, y0, _, _) = decode_segmentation(dict(record), image_hw)
        mask_file = None if mask_dir is None else Path(mask_dir) / f"{stem}_{index:04d}.png"
        points = [[float(v) for v in p] for p in record.get("point_coords", [])]
        extra = {} if provenance is None else {"samscope_provenance": provenance[index]}
        detection = local_mask_to_detection(
            local,
            (x0, y0),
            image_hw,
            label=label,
            mask_file=mask_file,
            disk_mask_pixels=disk_mask_pixels,
            predicted_iou=float(record["predicted_iou"]),
            stability_score=float(record["stability_score"]),
            prompt_points=points,
            prompt_labels=[1] * len(points),
            area=int(record.get("area", int(np.count_nonzero(local)))),
            **extra,
        )
        if detection is not None:
            detections.append(detection)
    return fo.Detections(detections=detections)
