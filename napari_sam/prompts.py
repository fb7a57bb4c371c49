"""napari prompt layers → sam_core prompts for one slice (no viewer needed).

Coordinates come in as (z, y, x) or (y, x) in the *image layer's data pixels*: the annotator
maps them there first (`layer_transforms`), so napari's scale/translate never reach this
module. sam_core wants (x, y).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam_core.errors import PromptError


@dataclass(frozen=True)
class SlicePrompts:
    """Prompts of one object on one slice, in pixels of that slice.

    points_xy: (N, 2) float64; labels: (N,) int64 1 positive / 0 negative;
    box_xyxy: (4,) float64 x0, y0, x1, y1 or None.
    """

    points_xy: np.ndarray
    labels: np.ndarray
    box_xyxy: np.ndarray | None

    @property
    def empty(self) -> bool:
        return len(self.points_xy) == 0 and self.box_xyxy is None

    @property
    def ambiguous(self) -> bool:
        """One click and no box: SAM's three candidate masks are worth showing."""
        return len(self.points_xy) == 1 and self.box_xyxy is None

    def key(self) -> bytes:
        box = b"" if self.box_xyxy is None else self.box_xyxy.tobytes()
        return self.points_xy.tobytes() + self.labels.tobytes() + box


def _on_slice(coords: np.ndarray, z: int | None) -> np.ndarray:
    """Rows of (N, D) napari coords that lie on slice z (all rows for 2-D data)."""
    if z is None or coords.shape[1] == 2:
        return np.ones(len(coords), dtype=bool)
    return np.round(coords[:, 0]).astype(int) == z


def slice_prompts(
    points_zyx: np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    boxes: Sequence[np.ndarray],
    z: int | None,
    image_hw: tuple[int, int],
) -> SlicePrompts:
    """Points and the last box on slice z, as sam_core prompts.

    points_zyx: (N, 2) yx or (N, 3) zyx napari points; positive: (N,) bool.
    boxes: napari rectangles, each (4, 2) or (4, 3) vertices; the last one on slice z is used.
    Raises PromptError naming the point if one lies outside the (H, W) image.
    """
    points = np.asarray(points_zyx, dtype=np.float64)
    if points.size == 0:
        points = points.reshape(0, 2)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if len(positive) != len(points):
        raise PromptError(f"{len(points)} points but {len(positive)} positive/negative flags")
    keep = _on_slice(points, z)
    yx = points[keep][:, -2:]
    h, w = image_hw
    outside = (yx[:, 0] < -0.5) | (yx[:, 0] > h - 0.5) | (yx[:, 1] < -0.5) | (yx[:, 1] > w - 0.5)
    if outside.any():
        y, x = yx[np.argmax(outside)]
        raise PromptError(
            f"point (x={x:.0f}, y={y:.0f}) is outside the image of {w}×{h} pixels; "
            "delete it or click inside the image"
        )
    box = None
    for vertices in boxes:
        vertices = np.asarray(vertices, dtype=np.float64)
        if not _on_slice(vertices[:1], z)[0]:
            continue
        y0, x0 = vertices[:, -2:].min(axis=0)
        y1, x1 = vertices[:, -2:].max(axis=0)
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            box = np.array([x0, y0, x1, y1], dtype=np.float64)
    return SlicePrompts(
        points_xy=yx[:, ::-1].copy(),
        labels=positive[keep].astype(np.int64),
        box_xyxy=box,
    )
