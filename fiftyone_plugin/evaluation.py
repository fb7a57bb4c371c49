"""Mask evaluation through FiftyOne's own `evaluate_detections(use_masks=True)`."""

from __future__ import annotations

from typing import Any

import fiftyone as fo

from sam_core import PromptError


def detections_fields(collection) -> list[str]:
    """Names of the top-level Detections fields of `collection`."""
    return [
        name
        for name, field in collection.get_field_schema().items()
        if getattr(field, "document_type", None) is fo.Detections
    ]


def evaluate_masks(
    collection, pred_field: str, gt_field: str, eval_key: str = "sam_eval", iou: float | None = 0.5
) -> dict[str, Any]:
    """COCO-style matching of the masks in `pred_field` to `gt_field` by mask IoU, stored under
    `eval_key` (per-detection ``<eval_key>`` tp/fp/fn and ``<eval_key>_iou``; the App shows
    them and the evaluation panel lists the run). Returns precision, recall, mAP and counts."""
    fields = detections_fields(collection)
    for role, name in (("predictions", pred_field), ("ground truth", gt_field)):
        if name not in fields:
            raise PromptError(
                f"{role} field {name!r} is not a Detections field of this dataset "
                f"(Detections fields: {', '.join(fields) or 'none'})"
            )
    if pred_field == gt_field:
        raise PromptError("the predictions and ground truth fields must differ")
    dataset = collection._dataset
    if eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    # mAP needs a confidence on every prediction (samscope masks carry their predicted IoU)
    ranked = collection.count(f"{pred_field}.detections") == collection.count(
        f"{pred_field}.detections.confidence"
    )
    results = collection.evaluate_detections(
        pred_field,
        gt_field=gt_field,
        eval_key=eval_key,
        use_masks=True,
        iou=0.5 if iou is None else float(iou),
        compute_mAP=ranked,
        classwise=False,
    )
    report = results.metrics()
    return {
        "eval_key": eval_key,
        "precision": float(report["precision"]),
        "recall": float(report["recall"]),
        "mAP": float(results.mAP()) if ranked else None,
        "tp": int(collection.sum(f"{eval_key}_tp")),
        "fp": int(collection.sum(f"{eval_key}_fp")),
        "fn": int(collection.sum(f"{eval_key}_fn")),
    }
