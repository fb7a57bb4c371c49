"""Scores of an instance label image against ground truth: COCO AP and segmentation accuracy.

AP, AP50 (and AP75) come from `sam_core.evaluation.coco_metrics.instance_ap` (pycocotools,
class-agnostic). Mean segmentation accuracy (the DSB 2018 / StarDist / micro-sam score) is,
for each IoU threshold t in 0.50, 0.55, ..., 0.95, TP / (TP + FP + FN) with one-to-one
matches of IoU > t (unique for t >= 0.5), averaged over the thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..evaluation.coco_metrics import ImageInstances, instance_ap

SA_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def label_masks(labels: np.ndarray) -> np.ndarray:
    """(H, W) ids → (N, H, W) bool masks of ids 1..max present in the image (in id order)."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    return labels[None] == ids[:, None, None]


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(G, P) IoU of every ground-truth object with every predicted one, from two label
    images (H, W) (ids need not be consecutive)."""
    gt_ids = np.unique(gt)
    gt_ids = gt_ids[gt_ids != 0]
    pred_ids = np.unique(pred)
    pred_ids = pred_ids[pred_ids != 0]
    if gt_ids.size == 0 or pred_ids.size == 0:
        return np.zeros((gt_ids.size, pred_ids.size))
    gi = np.searchsorted(gt_ids, gt.ravel())
    pi = np.searchsorted(pred_ids, pred.ravel())
    both = (gt.ravel() != 0) & (pred.ravel() != 0)
    inter = np.zeros((gt_ids.size, pred_ids.size))
    np.add.at(inter, (gi[both], pi[both]), 1)
    gt_area = np.bincount(gi[gt.ravel() != 0], minlength=gt_ids.size)
    pred_area = np.bincount(pi[pred.ravel() != 0], minlength=pred_ids.size)
    union = gt_area[:, None] + pred_area[None, :] - inter
    return inter / np.maximum(union, 1)


def segmentation_accuracy(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = SA_THRESHOLDS
) -> float:
    """Mean over `thresholds` of TP / (TP + FP + FN) of two (H, W) label images; 1.0 when
    both are empty."""
    iou = iou_matrix(gt, pred)
    n_gt, n_pred = iou.shape
    if n_gt == 0 and n_pred == 0:
        return 1.0
    scores = []
    for t in thresholds:
        tp = int(np.count_nonzero((iou > t).any(axis=1))) if iou.size else 0
        scores.append(tp / (n_gt + n_pred - tp))
    return float(np.mean(scores))


def score_labels(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    scores: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """{"AP", "AP50", "AP75", "mSA", "objects_gt", "objects_pred"} over a set of images.

    gts / preds: (H, W) label images per image; scores: per image, the (N,) confidence of
    pred ids 1..N (default 1.0 each), which orders predictions for AP.
    """
    items, sa = [], []
    n_pred = 0
    for i, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
        gt_masks = label_masks(gt)
        ids = np.unique(pred)
        ids = ids[ids != 0]
        pred_masks = pred[None] == ids[:, None, None]
        conf = np.ones(len(ids)) if scores is None else np.asarray(scores[i])[ids - 1]
        items.append(ImageInstances(gt_masks, pred_masks, conf))
        sa.append(segmentation_accuracy(gt, pred))
        n_pred += len(ids)
    ap = instance_ap(items, max_dets=(100, 1000, 3000))
    return {
        "AP": ap["AP"],
        "AP50": ap["AP50"],
        "AP75": ap["AP75"],
        "mSA": float(np.mean(sa)),
        "objects_gt": int(sum(len(np.unique(g)) - 1 for g in gts)),
        "objects_pred": int(n_pred),
    }
