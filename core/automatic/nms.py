"""Greedy non-maximum suppression on axis-aligned boxes (ours; no torchvision)."""

from __future__ import annotations

import numpy as np


def box_iou_matrix(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) boxes (x0, y0, x1, y1), end-exclusive pixels → (N, N) float64 IoU."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    iw = (np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])).clip(
        0
    )
    ih = (np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])).clip(
        0
    )
    inter = iw * ih
    union = area[:, None] + area[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds
    `iou_threshold`. Ties keep the earlier index (stable sort). Memory is O(N): each kept box
    is compared with the boxes after it, so tens of thousands of boxes (tiled images) are fine.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes_xyxy, dtype=np.float64)[order]
    x0, y0, x1, y1 = b.T
    area = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    alive = np.ones(n, dtype=bool)
    kept = []
    for i in range(n):
        if not alive[i]:
            continue
        kept.append(i)
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        if rest.size == 0:
            break
        iw = (np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])).clip(0)
        ih = (np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])).clip(0)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive[rest[iou > iou_threshold]] = False
    return order[np.asarray(kept, dtype=np.int64)]
