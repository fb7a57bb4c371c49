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
    masks: per candidate, a (h, w) bool mask cut to its own bounding box.
    boxes_xyxy: (N, 4) int64 mask bounding boxes, image pixels, end-exclusive.
    areas: (N,) int64 pixels. predicted_iou, stability_score: (N,) float32.
    points_xy: (N, 2) float64 prompt point (x, y) in image pixels.
    region_index: (N,) int64 index into `regions`.
    near_region_edge: (N,) bool, the box touches an edge of its region that is not an image edge
        (the mask is probably cut off by the crop/tile border).
    iou_floor, stability_floor: what the expensive pass kept; `select` cannot go below them.
    """

    image_hw: tuple[int, int]
    regions: list[CropRegion]
    iou_floor: float
    stability_floor: float
    masks: list[np.ndarray] = field(default_factory=list)
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    predicted_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stability_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    region_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    near_region_edge: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def nbytes(self) -> int:
        """Memory held by the candidate masks (bytes)."""
        return sum(m.nbytes for m in self.masks)


class CandidateCollector:
    """Accumulates candidates region by region, then freezes them into `MaskCandidates`."""

    def __init__(self, image_hw, regions, iou_floor, stability_floor) -> None:
        self._result = MaskCandidates(tuple(image_hw), list(regions), iou_floor, stability_floor)
        self._rows: dict[str, list] = {
            k: [] for k in ("boxes", "areas", "iou", "stability", "points", "region", "edge")
        }

    def add(self, mask, box, area, iou, stability, point_xy, region, near_edge) -> None:
        self._result.masks.append(mask)
        for key, value in zip(
            ("boxes", "areas", "iou", "stability", "points", "region", "edge"),
            (box, area, iou, stability, point_xy, region, near_edge),
            strict=True,
        ):
            self._rows[key].append(value)

    def finish(self) -> MaskCandidates:
        r, rows = self._result, self._rows
        if r.masks:
            r.boxes_xyxy = np.asarray(rows["boxes"], dtype=np.int64).reshape(-1, 4)
            r.areas = np.asarray(rows["areas"], dtype=np.int64)
            r.predicted_iou = np.asarray(rows["iou"], dtype=np.float32)
            r.stability_score = np.asarray(rows["stability"], dtype=np.float32)
            r.points_xy = np.asarray(rows["points"], dtype=np.float64).reshape(-1, 2)
            r.region_index = np.asarray(rows["region"], dtype=np.int64)
            r.near_region_edge = np.asarray(rows["edge"], dtype=bool)
        return r
