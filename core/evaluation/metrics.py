"""Mask metrics: IoU with ignore regions, and the click-count summaries of interactive work.

Conventions: masks are (H, W) bool (or (K, H, W) for several predictions of one object);
`ignore` is an (H, W) bool mask of pixels that count neither as hit nor as miss (GrabCut's
unlabelled band). IoU of two empty masks is 1.0 (nothing to find, nothing found).
"""

from __future__ import annotations

import numpy as np

# The interactive-segmentation literature stops at 20 clicks; an object that never reaches the
# IoU target counts as 20 clicks (NoC) and as a failure (NoF).
MAX_CLICKS = 20
NOC_THRESHOLDS = (0.85, 0.90)


def mask_iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of one predicted (H, W) mask with the ground truth, ignored pixels left out."""
    return float(batch_iou(np.asarray(pred)[None], gt, ignore)[0])


def batch_iou(preds: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """IoU of each of K predicted masks (K, H, W) with one ground truth (H, W) → (K,) float64."""
    preds = np.asarray(preds, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if preds.shape[1:] != gt.shape:
        raise ValueError(f"predicted masks {preds.shape[1:]} and ground truth {gt.shape} differ")
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        preds = preds & keep
        gt = gt & keep
    flat_pred = preds.reshape(len(preds), -1)
    flat_gt = gt.reshape(-1)
    inter = np.count_nonzero(flat_pred & flat_gt, axis=1)
    union = np.count_nonzero(flat_pred | flat_gt, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.astype(np.float64)


def clicks_to_reach(ious: np.ndarray, threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Number of clicks (1-based) after which IoU first reaches `threshold`.

    ious: (C,) IoU after click 1..C. An object that never reaches it within `max_clicks`
    (or within the C clicks simulated) counts as `max_clicks`.
    """
    ious = np.asarray(ious, dtype=np.float64)[:max_clicks]
    reached = np.flatnonzero(ious >= threshold)
    return int(reached[0]) + 1 if reached.size else max_clicks


def summarize_clicks(
    iou_per_click: np.ndarray,
    thresholds: tuple[float, ...] = NOC_THRESHOLDS,
    max_clicks: int = MAX_CLICKS,
) -> dict[str, object]:
    """Summary of an interactive run over N objects.

    iou_per_click: (N, C) IoU of each object after 1..C clicks.
    Returns {"miou_per_click": [C floats], "noc@85": mean clicks, "nof@85": objects that never
    reach 85 % within `max_clicks`, ...} for each threshold.
    """
    ious = np.asarray(iou_per_click, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0:
        raise ValueError(f"need (objects, clicks) IoUs, got shape {ious.shape}")
    summary: dict[str, object] = {"miou_per_click": ious.mean(axis=0).tolist()}
    for threshold in thresholds:
        counts = np.array([clicks_to_reach(row, threshold, max_clicks) for row in ious])
        never = np.array([not np.any(row[:max_clicks] >= threshold) for row in ious])
        key = f"{round(threshold * 100)}"
        summary[f"noc@{key}"] = float(counts.mean())
        summary[f"nof@{key}"] = int(never.sum())
    return summary
