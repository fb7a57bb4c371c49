"""Class-agnostic instance-mask AP, AP50 and AR@k with pycocotools (paper §7.3/D.3 style).

All ground-truth instances and all predictions get one category ("object"): automatic masks
have no class. Crowd regions (COCO) are passed as ``iscrowd`` so pycocotools ignores matches
to them, as in the COCO benchmark.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

DEFAULT_MAX_DETS = (10, 100, 1000)


@dataclass
class ImageInstances:
    """Ground truth and predictions of one image.

    gt_masks: (N, H, W) bool; gt_crowd: (N,) bool or None.
    pred_masks: (M, H, W) bool, or M COCO RLE dicts ({"size": [H, W], "counts": ...});
    pred_scores: (M,) confidence (e.g. predicted IoU), higher first.
    """

    gt_masks: np.ndarray
    pred_masks: Sequence | np.ndarray
    pred_scores: np.ndarray
    gt_crowd: np.ndarray | None = None


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _as_rle(mask: object) -> dict:
    if isinstance(mask, dict):
        counts = mask["counts"]
        return {"size": list(mask["size"]), "counts": counts}
    return _encode(np.asarray(mask))


def instance_ap(
    images: Sequence[ImageInstances], max_dets: Sequence[int] = DEFAULT_MAX_DETS
) -> dict[str, float]:
    """COCO mask AP (IoU .50:.95), AP50, AP75 and AR@k for each k in `max_dets`.

    AP uses the largest k. Returns plain floats in 0..1; -1 where undefined (no ground truth).
    """
    max_dets = sorted(int(k) for k in max_dets)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    detections = []
    for image_id, item in enumerate(images, start=1):
        h, w = np.asarray(item.gt_masks).shape[1:] if len(item.gt_masks) else _size(item)
        gt["images"].append({"id": image_id, "height": int(h), "width": int(w)})
        crowd = item.gt_crowd if item.gt_crowd is not None else np.zeros(len(item.gt_masks))
        for mask, is_crowd in zip(item.gt_masks, crowd, strict=True):
            rle = _encode(mask)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(_bytes_rle(rle))),
                    "bbox": mask_utils.toBbox(_bytes_rle(rle)).tolist(),
                    "iscrowd": int(bool(is_crowd)),
                }
            )
        for mask, score in zip(item.pred_masks, item.pred_scores, strict=True):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _as_rle(mask),
                    "score": float(score),
                }
            )
    if not gt["annotations"]:
        raise ValueError("no ground-truth instances: AP is undefined")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections) if detections else COCO()
        if not detections:
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = max_dets
        evaluator.evaluate()
        evaluator.accumulate()
    return _summaries(evaluator, max_dets)


def _size(item: ImageInstances) -> tuple[int, int]:
    first = item.pred_masks[0]
    return tuple(first["size"]) if isinstance(first, dict) else np.asarray(first).shape


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _summaries(evaluator: COCOeval, max_dets: list[int]) -> dict[str, float]:
    # precision: (T iou thresholds, R recall points, K classes, A area ranges, M max dets)
    precision = evaluator.eval["precision"]
    recall = evaluator.eval["recall"]  # (T, K, A, M)
    thresholds = evaluator.params.iouThrs
    top = len(max_dets) - 1
    result = {
        "AP": _mean_valid(precision[:, :, 0, 0, top]),
        "AP50": _mean_valid(precision[np.isclose(thresholds, 0.5), :, 0, 0, top]),
        "AP75": _mean_valid(precision[np.isclose(thresholds, 0.75), :, 0, 0, top]),
    }
    for index, k in enumerate(max_dets):
        result[f"AR@{k}"] = _mean_valid(recall[:, 0, 0, index])
    return result
