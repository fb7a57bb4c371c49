"""Automatic masks for one image as FiftyOne detections, with one generator per settings."""

from __future__ import annotations

import threading
from typing import Any

import fiftyone as fo
import numpy as np

from sam_core import AutomaticMaskGenerator
from sam_core.training.checkpointing import automatic_thresholds

from .conversion import DISK_MASK_PIXELS, records_to_detections
from .inference import cached_embedding, get_predictor

# The generator settings users may choose (names and defaults of `AutomaticMaskGenerator`).
GENERATOR_DEFAULTS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 0,
}

_GENERATORS: dict[tuple, AutomaticMaskGenerator] = {}
_LOCK = threading.Lock()


def generator_settings(params: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The generator settings in `params` (others ignored), defaults filled in, types checked.

    Thresholds not in `params` (or None) come from the card of a fine-tuned `model`
    (``model.json`` beside its ``model.pth``, written by ``samscope finetune``) when it has
    searched ones, else the official 0.88 / 0.95.
    """
    settings = dict(GENERATOR_DEFAULTS)
    if model is not None:
        settings.update(automatic_thresholds(model) or {})
    for name, default in GENERATOR_DEFAULTS.items():
        value = params.get(name)
        if value is not None:
            settings[name] = type(default)(value)
    return settings


def get_generator(
    model_name: str = "vit_t", device: str = "cpu", **settings: Any
) -> AutomaticMaskGenerator:
    """An `AutomaticMaskGenerator` over the shared predictor of `model_name`, one per settings."""
    settings = generator_settings(settings, model_name)
    key = (model_name, device, tuple(sorted(settings.items())))
    with _LOCK:
        if key not in _GENERATORS:
            _GENERATORS[key] = AutomaticMaskGenerator(get_predictor(model_name, device), **settings)
        return _GENERATORS[key]


def automatic_detections(
    generator: AutomaticMaskGenerator,
    image: np.ndarray,
    filepath: str | None = None,
    mask_dir: str | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
) -> fo.Detections:
    """All masks the generator finds in `image` ((H, W) or (H, W, C), any dtype) as
    `fo.Detections` (label "object", ``predicted_iou``, ``stability_score``, the grid point
    that made each mask as ``prompt_points`` [[x, y]] px). The whole-image embedding is reused
    from the process cache when `filepath` was embedded before (single-crop settings only)."""
    embedding = None
    single_region = len(generator.regions_for(image.shape[:2])) == 1
    if single_region and filepath is not None:
        embedding = cached_embedding(generator.predictor, image, filepath)
    records = generator.generate(image, embedding=embedding)
    return records_to_detections(records, mask_dir=mask_dir, disk_mask_pixels=disk_mask_pixels)
