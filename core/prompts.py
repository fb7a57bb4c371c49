"""Validation of user prompts and their conversion to model tensors.

User prompts are in original-image pixels, (x, y) order: x is the column, y the row. A point at
integer (x, y) is the centre of that pixel; any point that falls on a pixel of the image, i.e.
-0.5 ≤ x ≤ W - 0.5 and -0.5 ≤ y ≤ H - 0.5, is accepted. Boxes are (x0, y0, x1, y1) with
x0 < x1 and y0 < y1; a box that sticks out of the image is clipped to it, one entirely outside
is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import PromptError
from .image_input import ImageGeometry

LOW_RES = 256


@dataclass(frozen=True)
class PromptBatch:
    """Validated prompts for B objects, in the model's 1024 input frame.

    points_xy: (B, N, 2) float32 or None; point_labels: (B, N) int64 (1 positive, 0 negative)
    boxes_xyxy: (B, 4) float32 or None; mask_logits: (B, 1, 256, 256) float32 or None
    batched: whether the caller passed a batch (outputs keep the leading B axis)
    """

    points_xy: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes_xyxy: torch.Tensor | None
    mask_logits: torch.Tensor | None
    batched: bool

    @property
    def size(self) -> int:
        for t in (self.points_xy, self.boxes_xyxy, self.mask_logits):
            if t is not None:
                return t.shape[0]
        return 0

    def slice(self, start: int, stop: int) -> PromptBatch:
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return PromptBatch(
            cut(self.points_xy),
            cut(self.point_labels),
            cut(self.boxes_xyxy),
            cut(self.mask_logits),
            self.batched,
        )


def build_prompts(
    geometry: ImageGeometry,
    points: object = None,
    labels: object = None,
    box: object = None,
    mask_input: object = None,
) -> PromptBatch:
    """Check user prompts against the image and convert them to the input frame.

    points: (N, 2) or (B, N, 2) xy pixels; labels: (N,) or (B, N), 1/0 (default all 1)
    box: (4,) or (B, 4) x0, y0, x1, y1 pixels; mask_input: (256, 256), (1, 256, 256),
    (B, 256, 256) or (B, 1, 256, 256) low-res logits from an earlier prediction.
    """
    if points is None and labels is not None:
        raise PromptError("labels were given without points")
    if points is None and box is None and mask_input is None:
        raise PromptError("no prompt: give points, a box or a mask_input")

    pts, lbl, points_batched = _points(points, labels, geometry)
    boxes, boxes_batched = _boxes(box, geometry)
    masks, masks_batched = _masks(mask_input)
    batched = points_batched or boxes_batched or masks_batched

    sizes = {t.shape[0] for t in (pts, boxes, masks) if t is not None}
    if len(sizes - {1}) > 1:
        raise PromptError(f"batched prompts disagree on the batch size: {sorted(sizes)}")
    size = max(sizes)
    pts, lbl, boxes, masks = (
        None if t is None else _broadcast(t, size) for t in (pts, lbl, boxes, masks)
    )
    return PromptBatch(pts, lbl, boxes, masks, batched)


def _broadcast(t: torch.Tensor, size: int) -> torch.Tensor:
    return t.expand(size, *t.shape[1:]) if t.shape[0] == 1 and size > 1 else t


def _finite_array(value: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} must be numbers: {exc}") from exc
    if not np.isfinite(array).all():
        raise PromptError(f"{what} contain NaN or infinite values")
    return array


def _points(points: object, labels: object, geometry: ImageGeometry):
    if points is None:
        return None, None, False
    pts = _finite_array(points, "points")
    if pts.ndim == 1 and pts.shape == (2,):
        pts = pts[None]
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] == 0:
        raise PromptError(f"points must be (N, 2) or (B, N, 2) xy pairs, got shape {pts.shape}")
    batched = pts.ndim == 3
    if not batched:
        pts = pts[None]
    if labels is None:
        lbl = np.ones(pts.shape[:2], dtype=np.int64)
    else:
        raw = np.asarray(labels)
        if raw.dtype == bool:
            raw = raw.astype(np.int64)
        raw = _finite_array(raw, "labels")
        if raw.ndim == 1 and not batched:
            raw = raw[None]
        if raw.shape != pts.shape[:2]:
            raise PromptError(
                f"labels of shape {np.shape(labels)} don't match points of shape "
                f"{np.shape(points)}: give one label (1 positive, 0 negative) per point"
            )
        if not np.isin(raw, (0, 1)).all():
            raise PromptError(f"labels must be 1 (positive) or 0 (negative), got {np.unique(raw)}")
        lbl = raw.astype(np.int64)

    h, w = geometry.original_hw
    outside = (
        (pts[..., 0] < -0.5)
        | (pts[..., 0] > w - 0.5)
        | (pts[..., 1] < -0.5)
        | (pts[..., 1] > h - 0.5)
    )
    if outside.any():
        bad = pts[outside][:3].tolist()
        raise PromptError(
            f"{int(outside.sum())} point(s) outside the {w}x{h} (width x height) image, "
            f"e.g. {bad}; points are (x, y) pixels"
        )
    frame = torch.from_numpy(geometry.to_input_frame(pts))
    return frame, torch.from_numpy(lbl), batched


def _boxes(box: object, geometry: ImageGeometry):
    if box is None:
        return None, False
    boxes = _finite_array(box, "box")
    if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4 or boxes.size == 0:
        raise PromptError(f"box must be (4,) or (B, 4) as x0, y0, x1, y1; got shape {boxes.shape}")
    batched = boxes.ndim == 2
    boxes = boxes.reshape(-1, 4)
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise PromptError(
            f"box {boxes[bad][0].tolist()} is inverted or has zero area: "
            "need x0 < x1 and y0 < y1 (x0, y0, x1, y1 in pixels)"
        )
    h, w = geometry.original_hw
    lo = np.array([-0.5, -0.5, -0.5, -0.5])
    hi = np.array([w - 0.5, h - 0.5, w - 0.5, h - 0.5])
    outside = (
        (boxes[:, 0] > hi[0])
        | (boxes[:, 2] < lo[0])
        | (boxes[:, 1] > hi[1])
        | (boxes[:, 3] < lo[1])
    )
    if outside.any():
        raise PromptError(
            f"box {boxes[outside][0].tolist()} lies outside the {w}x{h} (width x height) image"
        )
    boxes = np.clip(boxes, lo, hi)
    corners = geometry.to_input_frame(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    return torch.from_numpy(corners), batched


def _masks(mask_input: object):
    if mask_input is None:
        return None, False
    if isinstance(mask_input, torch.Tensor):
        mask_input = mask_input.detach().float().cpu().numpy()
    masks = _finite_array(mask_input, "mask_input").astype(np.float32)
    if masks.shape[-2:] != (LOW_RES, LOW_RES) or masks.ndim not in (2, 3, 4):
        raise PromptError(
            f"mask_input must be 256x256 low-res logits (the third output of predict), "
            f"got shape {masks.shape}"
        )
    if masks.ndim == 4 and masks.shape[1] != 1:
        raise PromptError(f"mask_input of shape {masks.shape}: give one mask per prompt")
    batched = masks.ndim == 4 or (masks.ndim == 3 and masks.shape[0] > 1)
    return torch.from_numpy(masks.reshape(-1, 1, LOW_RES, LOW_RES)), batched
