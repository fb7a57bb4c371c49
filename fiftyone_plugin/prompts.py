"""Prompts read from a sample's label field, in pixels of the image.

* ``fo.Detections``: each detection's box is one box prompt (x0, y0, x1, y1 px).
* ``fo.Keypoints``: each ``fo.Keypoint`` is one object. Its points are positive clicks unless
  the keypoint has a ``point_labels`` attribute, a list with one 1 (positive) or 0 (negative)
  per point. A keypoint whose ``label`` is ``"negative"`` or ``"background"`` (case ignored)
  has only negative points. Points FiftyOne marks missing (NaN) are skipped.

The label of the prompt becomes the label of the mask it produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np

from sam_core import PromptError

NEGATIVE_NAMES = ("negative", "background")


@dataclass
class ObjectPrompt:
    """The prompt for one object, pixels of the image: box_xyxy (4,) or None; points_xy
    (N, 2) with labels (N,) 1/0 (N may be 0)."""

    label: str | None
    box_xyxy: np.ndarray | None = None
    points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    source_id: str | None = None

    @property
    def kind(self) -> str:
        return "box" if self.box_xyxy is not None else "points"


def _box_prompt(detection: fo.Detection, width: int, height: int) -> ObjectPrompt:
    x, y, w, h = detection.bounding_box
    box = np.array([x * width, y * height, (x + w) * width, (y + h) * height], dtype=np.float64)
    return ObjectPrompt(label=detection.label, box_xyxy=box, source_id=detection.id)


def _point_prompt(keypoint: fo.Keypoint, width: int, height: int) -> ObjectPrompt | None:
    points = np.asarray(keypoint.points, dtype=np.float64).reshape(-1, 2)
    labels = keypoint.get_attribute_value("point_labels", None)
    if labels is None:
        negative = (keypoint.label or "").strip().lower() in NEGATIVE_NAMES
        labels = np.full(len(points), 0 if negative else 1, dtype=np.int64)
    else:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
            raise PromptError(
                f"keypoint {keypoint.id}: point_labels must hold one 0 or 1 per point "
                f"({len(points)} points), got {labels.tolist()}"
            )
    keep = np.isfinite(points).all(axis=1)
    points, labels = points[keep] * (width, height), labels[keep]
    if len(points) == 0:
        return None
    return ObjectPrompt(keypoint.label, None, points, labels, source_id=keypoint.id)


def prompts_from_label(label: fo.Label | None, width: int, height: int) -> list[ObjectPrompt]:
    """Object prompts of one sample's prompt field value (Detections or Keypoints).

    width, height: the image size in pixels. Raises PromptError for another label type.
    """
    if label is None:
        return []
    if isinstance(label, fo.Detections):
        return [_box_prompt(d, width, height) for d in label.detections]
    if isinstance(label, fo.Keypoints):
        prompts = (_point_prompt(k, width, height) for k in label.keypoints)
        return [p for p in prompts if p is not None]
    raise PromptError(
        f"prompt field holds {type(label).__name__}; use a Detections (boxes) or "
        "Keypoints (points) field"
    )


def check_prompt_field(collection: fo.core.collections.SampleCollection, field: str) -> str:
    """Validate that `field` of `collection` is a Detections or Keypoints field; returns its
    kind ("box" or "points") or raises PromptError naming the problem."""
    schema = collection.get_field_schema(flat=True)
    if field not in schema:
        raise PromptError(f"prompt field {field!r} does not exist on dataset {collection.name!r}")
    document_type = getattr(schema[field], "document_type", None)
    if document_type is fo.Detections:
        return "box"
    if document_type is fo.Keypoints:
        return "points"
    kind = document_type.__name__ if document_type else type(schema[field]).__name__
    raise PromptError(
        f"prompt field {field!r} is a {kind} field; use a Detections (boxes) or "
        "Keypoints (points) field"
    )
