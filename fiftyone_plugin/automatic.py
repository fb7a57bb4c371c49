"""Automatic masks for one image as FiftyOne detections, through the core session.

Settings are resolved by `sam_core.session.automatic_settings` (the user's, else a fine-tuned
model's searched thresholds, else the official ones). The generator returns box-local masks
(``output_mode="cropped_mask"``) that go straight into the detections: no full-size mask is
ever held per object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fiftyone as fo

from sam_core import AutomaticMaskGenerator
from sam_core.session import OFFICIAL_AUTOMATIC_SETTINGS, Session, SessionImage

from .conversion import DISK_MASK_PIXELS, records_to_detections


def automatic_generator(
    session: Session, params: Mapping[str, Any] | None = None
) -> AutomaticMaskGenerator:
    """The session's generator for the settings in `params` (an operator's inputs or
    `SamscopeModel`'s keywords; other keys and None values ignored), emitting cropped masks."""
    given = {name: (params or {}).get(name) for name in OFFICIAL_AUTOMATIC_SETTINGS}
    return session.automatic_generator(output_mode="cropped_mask", **given)


def automatic_detections(
    session: Session,
    image: SessionImage,
    generator: AutomaticMaskGenerator,
    mask_dir: str | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
) -> fo.Detections:
    """All masks `generator` finds in `image` as `fo.Detections` (label "object",
    ``predicted_iou``, ``stability_score``, ``confidence``, the grid point that made each mask
    as ``prompt_points`` [[x, y]] px). The embedding comes from the session's cache."""
    records = session.generate(image, generator=generator)
    return records_to_detections(
        records, image.image_hw, mask_dir=mask_dir, disk_mask_pixels=disk_mask_pixels
    )
