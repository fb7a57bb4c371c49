"""Automatic-mask thresholds that suit a fine-tuned model, kept in its card.

A fine-tuned IoU head predicts the IoUs it saw in training (on small microscopy objects, lower
than the official head's), so the official filters (predicted IoU > 0.88, stability >= 0.95)
can drop most good masks. After training, `store_tuned_thresholds` searches both thresholds on
the validation images and writes them to ``model.json`` under ``automatic``;
`checkpointing.automatic_thresholds(weights)` reads them back (``samscope segment`` and the
napari Automatic segmentation widget use them for that model unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..evaluation.datasets import Sample
from ..evaluation.threshold_search import IOU_GRID, STABILITY_GRID, search_thresholds
from ..modeling.sam import SamModel
from ..predictor import Predictor
from . import checkpointing

POINTS_PER_SIDE = 16


def store_tuned_thresholds(
    model: SamModel,
    val: Sequence[Sample],
    out_dir: str | Path,
    card: dict,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Search the thresholds for `model` on `val`, add them to `card`, save it in `out_dir`.

    Returns the card's new ``automatic`` entry: pred_iou_thresh, stability_score_thresh,
    searched_on, points_per_side, metric, value (AP50 on `val` with those thresholds).
    """
    from ..automatic import AutomaticMaskGenerator

    predictor = Predictor(model, device=model.device)
    generator = AutomaticMaskGenerator(
        predictor,
        points_per_side=POINTS_PER_SIDE,
        iou_floor=min(IOU_GRID),
        stability_floor=min(STABILITY_GRID),
    )
    found = search_thresholds(generator, val, progress=progress)
    card["automatic"] = {
        "pred_iou_thresh": found["pred_iou_thresh"],
        "stability_score_thresh": found["stability_score_thresh"],
        "searched_on": f"{len(val)} validation images",
        "points_per_side": POINTS_PER_SIDE,
        "metric": found["metric"],
        "value": found["value"],
    }
    checkpointing.save_card(card, Path(out_dir).expanduser())
    return card["automatic"]
