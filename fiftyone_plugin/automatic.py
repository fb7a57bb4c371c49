"""Automatic masks for one image as FiftyOne detections, through the core session.

Settings are resolved by `sam_core.session.automatic_settings` (the user's, else a fine-tuned
model's searched thresholds, else the official ones). The generator returns box-local masks
(``output_mode="cropped_mask"``) that go straight into the detections: no full-size mask is
ever held per object.

Modes (issue 15): ``grid`` (the generator above), ``decoder`` and ``decoder+prompts`` (a
trained instance decoder, `sam_core.instance`, through `Session.instance_segment`). The decoder
is the one listed in the ``model.json`` beside the model file, or one given as ``decoder``;
`instance_settings` checks it once, before any sample runs, so a missing or mismatched decoder
is one clear error rather than a failure per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fiftyone as fo

from sam_core import AutomaticMaskGenerator
from sam_core.errors import SamscopeError
from sam_core.instance import (
    MODES,
    InstanceDecoderError,
    InstanceThresholds,
    LoadedDecoder,
    PromptSettings,
    decoder_beside,
)
from sam_core.instance.segment import resolve_decoder
from sam_core.provenance import automatic_provenance, generator_settings
from sam_core.session import OFFICIAL_AUTOMATIC_SETTINGS, Session, SessionImage

from .conversion import DISK_MASK_PIXELS, records_to_detections

GRID = "grid"
AUTOMATIC_MODES = (GRID, *MODES)  # grid, decoder, decoder+prompts
# operator inputs / SamscopeModel keywords of the decoder modes -> InstanceThresholds fields
DECODER_THRESHOLDS = {
    "decoder_foreground": "foreground",
    "decoder_centre": "centre",
    "decoder_boundary": "boundary",
    "decoder_min_area": "min_area",
}
DECODER_PARAMS = ("decoder", "prompt", *DECODER_THRESHOLDS)


class InstanceSettingsError(SamscopeError, ValueError):
    """A bad mode or bad decoder settings for automatic masks."""


@dataclass(frozen=True)
class InstanceSettings:
    """How the decoder modes run: mode, the checked decoder, post-processing thresholds and
    (decoder+prompts) the prompt settings."""

    mode: str
    decoder: LoadedDecoder
    thresholds: InstanceThresholds
    prompts: PromptSettings

    def provenance_settings(self) -> dict:
        """Flat settings kept in each detection's ``samscope_provenance`` parameters."""
        out = {"decoder": str(self.decoder.path), **self.thresholds.to_dict()}
        if self.mode != "decoder":
            out.update({f"apg_{k}": v for k, v in self.prompts.to_dict().items()})
        return out


def instance_settings(
    session: Session, params: Mapping[str, Any] | None
) -> InstanceSettings | None:
    """The decoder-mode settings in `params` (an operator's inputs or `SamscopeModel`'s
    keywords: ``mode``, ``decoder`` file, ``decoder_foreground`` / ``_centre`` /
    ``_boundary`` / ``_min_area`` (blank: the decoder's tuned values), ``prompt`` "point" /
    "box"); None for mode ``grid``.

    Raises InstanceSettingsError (unknown mode, thresholds out of range),
    InstanceDecoderError (no decoder beside the model, unreadable, or trained on other
    weights: checked here, once, before any sample).
    """
    params = params or {}
    mode = params.get("mode") or GRID
    if mode == GRID:
        return None
    if mode not in MODES:
        raise InstanceSettingsError(
            f"unknown mode {mode!r}: automatic masks modes are {', '.join(AUTOMATIC_MODES)}"
        )
    path = params.get("decoder") or decoder_beside(session.model)
    if path is None:
        raise InstanceDecoderError(
            f"mode {mode!r} needs an instance decoder, and the model {session.model!r} has "
            "none (no model.json beside it lists one). Train one (`samscope train-instance "
            "--data DIR --out DIR`, or napari's Fine-tune widget) and choose its model.pth as "
            "the model, give its instance_decoder.pth as the decoder, or use mode 'grid'"
        )
    decoder = resolve_decoder(session, path)
    given = {
        field: params[key]
        for key, field in DECODER_THRESHOLDS.items()
        if params.get(key) is not None
    }
    try:
        thresholds = InstanceThresholds(**{**decoder.thresholds.to_dict(), **given})
        prompts = PromptSettings(prompt=params.get("prompt") or "point")
    except (TypeError, ValueError) as exc:
        raise InstanceSettingsError(f"bad instance decoder settings: {exc}") from None
    return InstanceSettings(mode, decoder, thresholds, prompts)


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
    generator: AutomaticMaskGenerator | None,
    mask_dir: str | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
    instance: InstanceSettings | None = None,
) -> fo.Detections:
    """All masks `generator` finds in `image` as `fo.Detections` (label "object",
    ``predicted_iou``, ``stability_score``, ``confidence``, the grid point that made each mask
    as ``prompt_points`` [[x, y]] px, how it was made as ``samscope_provenance``). The
    embedding comes from the session's cache.

    instance: decoder-mode settings (`instance_settings`): the decoder's objects instead of
    the grid's (``predicted_iou`` its mean foreground probability for ``decoder``, SAM's for
    ``decoder+prompts``; ``prompt_points`` the object's interior-most pixel)."""
    if instance is None:
        records = session.generate(image, generator=generator)
        settings, mode = generator_settings(generator), GRID
    else:
        _, records = session.instance_segment(
            image,
            mode=instance.mode,
            decoder=instance.decoder,
            thresholds=instance.thresholds,
            prompts=instance.prompts,
            output_mode="cropped_mask",
        )
        settings, mode = instance.provenance_settings(), instance.mode
    provenance = automatic_provenance(session, image, records, settings=settings, mode=mode)
    return records_to_detections(
        records,
        image.image_hw,
        mask_dir=mask_dir,
        disk_mask_pixels=disk_mask_pixels,
        provenance=[r.to_dict() for r in provenance],
    )
