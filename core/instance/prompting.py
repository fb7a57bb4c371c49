"""Automatic prompt generation (APG): one prompt per decoder object for SAM's mask decoder.

For every object the watershed found, the prompt is a positive point at the object's
interior-most pixel (the maximum of the predicted boundary-distance map inside it), or the
object's box (``prompt="box"``). SAM answers each prompt (a point asks for 3 masks and keeps
the best by SAM's rule, `mask_geometry.best_mask_index`); the masks are then filtered and
de-duplicated as automatic mask generation does (paper §4 / appendix B): predicted IoU above
`pred_iou_thresh`, stability score (mask area at logit > +1 over area at logit > -1) at least
`stability_score_thresh`, at most `max_mask_fraction` of the image, then greedy box NMS
(`sam_core.automatic.box_nms`, IoU `box_nms_thresh`) by predicted IoU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..automatic import box_nms
from ..mask_geometry import best_mask_index, bounding_box, box_prompt

STABILITY_OFFSET = 1.0


@dataclass(frozen=True)
class PromptSettings:
    """APG settings (fractions 0..1; `points_per_batch` prompts per SAM decoder pass)."""

    prompt: str = "point"
    pred_iou_thresh: float = 0.7
    stability_score_thresh: float = 0.8
    box_nms_thresh: float = 0.7
    max_mask_fraction: float = 0.9
    points_per_batch: int = 16

    def __post_init__(self) -> None:
        if self.prompt not in ("point", "box"):
            raise ValueError(f"prompt must be 'point' or 'box', got {self.prompt!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.points_per_batch < 1:
            raise ValueError("points_per_batch must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PromptedObject:
    """One SAM mask: local (h, w) bool mask inside box_xyxy (end-exclusive pixels), SAM's
    predicted IoU, stability score, and the prompt point (x, y) pixels."""

    mask: np.ndarray
    box_xyxy: tuple[int, int, int, int]
    predicted_iou: float
    stability: float
    point_xy: tuple[float, float]


def object_points(labels: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """(N, 2) xy of the maximum of `boundary` inside each object 1..N of `labels`."""
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros((0, 2))
    positions = ndimage.maximum_position(boundary, labels, np.arange(1, n + 1))
    return np.array([[c, r] for r, c in positions], dtype=np.float64)


def prompted_objects(
    session, embedding, labels: np.ndarray, boundary: np.ndarray, settings: PromptSettings
) -> list[PromptedObject]:
    """SAM's masks for one prompt per object of `labels` (H, W), filtered and de-duplicated
    (module docstring); sorted by predicted IoU, highest first."""
    points = object_points(labels, boundary)
    if settings.prompt == "box":
        slices = ndimage.find_objects(labels)
        boxes = (
            np.stack(
                [box_prompt(_full(labels, i + 1, s)) for i, s in enumerate(slices) if s is not None]
            )
            if len(points)
            else np.zeros((0, 4))
        )
    found: list[PromptedObject] = []
    h, w = labels.shape
    step = settings.points_per_batch
    for start in range(0, len(points), step):
        batch = points[start : start + step]
        if settings.prompt == "box":
            logits, scores, _ = session.predict(
                embedding, box=boxes[start : start + step], multimask=False, return_logits=True
            )
        else:
            logits, scores, _ = session.predict(
                embedding,
                points=batch[:, None, :],
                labels=np.ones((len(batch), 1)),
                multimask=True,
                return_logits=True,
            )
        for b in range(len(batch)):
            best = best_mask_index(logits[b] > 0, scores[b], settings.max_mask_fraction)
            obj = _prompted(logits[b, best], float(scores[b, best]), batch[b], (h, w), settings)
            if obj is not None:
                found.append(obj)
    if not found:
        return []
    keep = box_nms(
        np.array([o.box_xyxy for o in found], dtype=np.float64),
        np.array([o.predicted_iou for o in found]),
        settings.box_nms_thresh,
    )
    return [found[i] for i in keep]


def _full(labels: np.ndarray, index: int, region) -> np.ndarray:
    mask = np.zeros(labels.shape, dtype=bool)
    mask[region] = labels[region] == index
    return mask


def _prompted(logits, iou, point, image_hw, settings) -> PromptedObject | None:
    if iou <= settings.pred_iou_thresh:
        return None
    union = np.count_nonzero(logits > -STABILITY_OFFSET)
    if union == 0:
        return None
    stability = np.count_nonzero(logits > STABILITY_OFFSET) / union
    if stability < settings.stability_score_thresh:
        return None
    mask = logits > 0
    area = np.count_nonzero(mask)
    if area == 0 or area > settings.max_mask_fraction * image_hw[0] * image_hw[1]:
        return None
    x0, y0, x1, y1 = bounding_box(mask)
    return PromptedObject(
        mask[y0:y1, x0:x1],
        (x0, y0, x1, y1),
        iou,
        float(stability),
        (float(point[0]), float(point[1])),
    )
