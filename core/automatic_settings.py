"""Automatic-mask settings, resolved in one place for every front end.

Official defaults (the paper's and the official generator's), a fine-tuned model's searched
thresholds from its ``model.json``, and what the user chose; see `automatic_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["OFFICIAL_AUTOMATIC_SETTINGS", "automatic_settings", "tuned_thresholds"]


# The automatic mask generator's settings a user may choose, with the official defaults.
OFFICIAL_AUTOMATIC_SETTINGS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 0,
}
_THRESHOLDS = ("pred_iou_thresh", "stability_score_thresh")


def automatic_settings(
    given: Mapping[str, Any] | None = None, model: str | None = None
) -> dict[str, Any]:
    """The automatic mask generator's settings for `model`, resolved once for every front end.

    given: what the user chose (None values count as not given; unknown names are ignored).
    Precedence: `given` > a fine-tuned model's searched thresholds (``model.json`` beside a
    ``.pth`` that ``samscope finetune`` wrote) > `OFFICIAL_AUTOMATIC_SETTINGS`.
    Returns a new dict with every key of `OFFICIAL_AUTOMATIC_SETTINGS`, values typed as the
    defaults, plus ``"thresholds_from"``: "given", "model.json" or "official".
    """
    settings = dict(OFFICIAL_AUTOMATIC_SETTINGS)
    source = "official"
    tuned = tuned_thresholds(model)
    if tuned:
        settings.update({k: tuned[k] for k in _THRESHOLDS})
        source = "model.json"
    for name, default in OFFICIAL_AUTOMATIC_SETTINGS.items():
        value = (given or {}).get(name)
        if value is not None:
            settings[name] = type(default)(value)
    if given and all(given.get(k) is not None for k in _THRESHOLDS):
        source = "given"
    settings["thresholds_from"] = source
    return settings


def tuned_thresholds(model: str | None) -> dict[str, float] | None:
    """A fine-tuned checkpoint's searched thresholds (pred_iou_thresh, stability_score_thresh)
    from its ``model.json``, or None (registry names, files without a card)."""
    if model is None or not Path(str(model)).suffix:
        return None
    from .training.checkpointing import automatic_thresholds

    return automatic_thresholds(str(model))
