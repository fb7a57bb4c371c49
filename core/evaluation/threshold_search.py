"""Choosing the automatic-mask thresholds for a model on labelled images.

The generator's default filters (predicted IoU > 0.88, stability >= 0.95) suit the official
weights, whose IoU head was trained on SA-1B. A fine-tuned IoU head predicts the IoU it saw on
the training data, which for small microscopy objects is lower, so the same thresholds then
throw away good masks. Since `AutomaticMaskGenerator.select` re-thresholds without the model,
the candidates of each image are computed once and every pair of thresholds on the grid is
scored with pycocotools (the same AP as `evaluate_automatic`).

    search = search_thresholds(generator, samples)          # e.g. training images
    generator.pred_iou_thresh = search["pred_iou_thresh"]
    generator.stability_score_thresh = search["stability_score_thresh"]

Pick the thresholds on images that are not the ones you report results on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .coco_metrics import instance_ap
from .datasets import Sample
from .runner import ground_truth, scored_records

IOU_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9)
STABILITY_GRID = (0.8, 0.85, 0.9, 0.95)
METRICS = ("AP", "AP50", "AP75")


def search_thresholds(
    generator: object,
    samples: Sequence[Sample],
    iou_grid: Sequence[float] = IOU_GRID,
    stability_grid: Sequence[float] = STABILITY_GRID,
    metric: str = "AP50",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """The (pred_iou_thresh, stability_score_thresh) pair with the best `metric` on `samples`.

    generator: an `AutomaticMaskGenerator` whose iou_floor / stability_floor are at or below
        the smallest grid values (e.g. ``iou_floor=min(IOU_GRID)``; the default floors are 0.5).
    Returns {"pred_iou_thresh", "stability_score_thresh", "metric", "value", "grid": [rows of
    {"pred_iou_thresh", "stability_score_thresh", "AP", "AP50", "AP75"}], "n_images",
    "seconds"}. Ties go to the higher thresholds (fewer, surer masks).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not samples:
        raise ValueError("threshold search needs at least one labelled image")
    floor_iou = getattr(generator, "iou_floor", 0.0)
    floor_stability = getattr(generator, "stability_floor", 0.0)
    if min(iou_grid) < floor_iou or min(stability_grid) < floor_stability:
        raise ValueError(
            f"grid below the generator's floors (pred_iou {floor_iou}, stability "
            f"{floor_stability}): lower iou_floor / stability_floor when creating it"
        )
    started = time.perf_counter()
    prepared = []
    for done, sample in enumerate(samples, start=1):
        candidates = generator.compute_candidates(sample.image)
        prepared.append((candidates, *ground_truth(sample)))
        if progress is not None:
            progress(done, len(samples))

    rows = []
    for iou_t in sorted(iou_grid):
        for stability_t in sorted(stability_grid):
            images = []
            for candidates, gt_masks, crowd in prepared:
                records = generator.select(
                    candidates,
                    pred_iou_thresh=iou_t,
                    stability_score_thresh=stability_t,
                    output_mode="coco_rle",  # what pycocotools reads; no full-size masks
                )
                images.append(scored_records(records, gt_masks, crowd))
            scores = instance_ap(images)
            rows.append(
                {
                    "pred_iou_thresh": float(iou_t),
                    "stability_score_thresh": float(stability_t),
                    **{key: scores[key] for key in METRICS},
                }
            )
    best = max(
        rows,
        key=lambda r: (r[metric], r["pred_iou_thresh"], r["stability_score_thresh"]),
    )
    return {
        "pred_iou_thresh": best["pred_iou_thresh"],
        "stability_score_thresh": best["stability_score_thresh"],
        "metric": metric,
        "value": best[metric],
        "grid": rows,
        "n_images": len(prepared),
        "seconds": time.perf_counter() - started,
    }
