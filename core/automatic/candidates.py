"""Candidate masks of the expensive pass, kept compactly so thresholds can be re-applied cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grids import CropRegion


@dataclass
class MaskCandidates:
    """Every mask the model proposed that passed the loose floors of the expensive pass.

    image_hw: (H, W) of the image in pixels.
    regions: the crops/tiles that were embedded (see `grids.CropRegion`).
    packed_masks / mask_shapes: per candidate, its (h, w) bool mask cut to its own bounding
        box, bit-packed (`mask(i)` unpacks one).
    boxes_xyxy: (N, 4) int64 mask bounding boxes, image pixels, end-exclusive.
    areas: (N,) int64 pixels. predicted_iou, stability_score: (N,) float32.
    points_xy: (N, 2) float64 prompt point (x, y) in image pixels.
    region_index: (N,) int64 index into `regions`.
    iou_floor, stability_floor: what the expensive pass kept; `select` cannot go below them.
    """

    image_hw: tuple[int, int]
    regions: list[CropRegion]
    iou_floor: float
    stability_floor: float
    packed_masks: list[np.ndarray] = field(default_factory=list)
    mask_shapes: list[tuple[int, int]] = field(default_factory=list)
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    predicted_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stability_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    region_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.packed_masks)

    def mask(self, i: int) -> np.ndarray:
        """Candidate i's (h, w) bool mask, cut to its bounding box `boxes_xyxy[i]`."""
        h, w = self.mask_shapes[i]
        return np.unpackbits(self.packed_masks[i], count=h * w).reshape(h, w).view(bool)

    @property
    def nbytes(self) -> int:
        """Memory held by the candidate masks (bytes)."""
        return sum(m.nbytes for m in self.packed_masks)


_ROWS = ("boxes", "areas", "iou", "stability", "points", "region")


class CandidateCollector:
    """Accumulates candidates region by region, then freezes them into `MaskCandidates`."""

    def __init__(self, image_hw, regions, iou_floor, stability_floor) -> None:
        self._result = MaskCandidates(tuple(image_hw), list(regions), iou_floor, stability_floor)
        self._rows: dict[str, list] = {k: [] for k in _ROWS}

    def add(self, mask, box, area, iou, stability, point_xy, region) -> None:
        """mask: (h, w) bool cut to `box` (x0, y0, x1, y1 image pixels, end-exclusive)."""
        self._result.packed_masks.append(np.packbits(mask, axis=None))
        self._result.mask_shapes.append(mask.shape)
        for key, value in zip(_ROWS, (box, area, iou, stability, point_xy, region), strict=True):
            self._rows[key].append(value)

    def finish(self) -> MaskCandidates:
        r, rows = self._result, self._rows
        if r.packed_masks:
            r.boxes_xyxy = np.asarray(rows["boxes"], dtype=np.int64).reshape(-1, 4)
            r.areas = np.asarray(rows["areas"], dtype=np.int64)
            r.predicted_iou = np.asarray(rows["iou"], dtype=np.float32)
            r.stability_score = np.asarray(rows["stability"], dtype=np.float32)
            r.points_xy = np.asarray(rows["points"], dtype=np.float64).reshape(-1, 2)
            r.region_index = np.asarray(rows["region"], dtype=np.int64)
        return r
