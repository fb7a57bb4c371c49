"""Records for each way a mask is made (prompted, automatic, refined, manual): what the
session, image, prompts and parameters were, in `MaskProvenance` form."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProvenanceError
from .record import (
    MaskProvenance,
    _check_review,
    _empty_review,
    _plain,
    array_digest,
    mask_summary,
)


def model_provenance(session) -> dict:
    """{"name", "source", "checkpoint_sha256", "card"} of a `Session`'s model.

    source: the registry name or checkpoint path the session was made with (replay loads it);
    card: a fine-tuned model's card summary (``model.json`` beside ``model.pth``) or None."""
    sha, _, name = session.model_id.partition(":")
    return {
        "name": name,
        "source": session.model,
        "checkpoint_sha256": sha or None,
        "card": _card_summary(session.model),
    }


_CARD_KEYS = ("format", "samscope", "base_model", "arch", "base_sha256", "epochs_done")


def _card_summary(model: str) -> dict | None:
    if not Path(str(model)).suffix:
        return None
    from ..training.checkpointing import card_beside

    card = card_beside(str(model))
    if card is None:
        return None
    summary = {k: card[k] for k in _CARD_KEYS if k in card}
    if card.get("automatic"):
        summary["automatic"] = card["automatic"]
    summary["sha256"] = hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()
    return summary


def preprocessing_provenance(session, image, z: int | None = None, image_path=None) -> dict:
    """{"channels", "normalisation", "tiling", "plane_digest", "z", "image", "image_hw"} of the
    plane `z` of `image` (array, path or `SessionImage`) as `session` embeds it.

    image_path: the file to name (default: the file the image was read from, if any)."""
    from ..embedding_keys import plane_digest

    image = session.load(image)
    plane = image.plane(z)
    layout = session.tile_layout(plane.shape[:2])
    tiling = None
    if layout is not None:
        tiling = {
            "tile_shape": list(layout.tile_shape),
            "halo": list(layout.halo),
            "max_side": session.max_side,
        }
    path = image_path if image_path is not None else image.source
    return {
        "channels": _plain(image.channels),
        "normalisation": image.normalization,
        "tiling": tiling,
        "plane_digest": plane_digest(plane, image.channels),
        "z": None if z is None else int(z),
        "image": None if path is None else str(path),
        "image_hw": list(image.image_hw),
    }


def _base_parameters(session) -> dict:
    return {"precision": session.precision, "device": str(session.predictor.device)}


def _stamp() -> dict:
    from .. import __version__

    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"samscope_version": __version__, "created": created}


def _prompts(points_xy, point_labels, box_xyxy, mask_input, mask_prompt=None) -> dict:
    points = [] if points_xy is None else np.asarray(points_xy, np.float64).reshape(-1, 2)
    labels = [] if point_labels is None else np.asarray(point_labels).reshape(-1)
    if len(points) != len(labels):
        raise ProvenanceError(f"{len(points)} points but {len(labels)} point labels")
    rle = None
    if mask_prompt is not None:
        from ..mask_geometry import encode_rle

        rle = encode_rle(np.asarray(mask_prompt, dtype=bool))
    return {
        "points_xy": [[float(x), float(y)] for x, y in points],
        "point_labels": [int(v) for v in labels],
        "box_xyxy": None
        if box_xyxy is None
        else [float(v) for v in np.asarray(box_xyxy).reshape(4)],
        "mask_input_sha256": None
        if mask_input is None
        else array_digest(np.asarray(mask_input, np.float32)),
        "mask_prompt_rle": rle,
    }


def prompted_provenance(
    session,
    image,
    *,
    z: int | None = None,
    points_xy=None,
    point_labels=None,
    box_xyxy=None,
    mask_input=None,
    multimask_output: bool,
    mask_index: int,
    mask: np.ndarray | None = None,
    image_path=None,
    review: Mapping[str, Any] | None = None,
    extra_parameters: Mapping[str, Any] | None = None,
) -> MaskProvenance:
    """The record of a mask SAM gave for prompts on `image` (array, path or `SessionImage`;
    plane `z` of a stack) through `session`.

    points_xy: (N, 2) xy pixels; point_labels: (N,) 1 positive / 0 negative; box_xyxy: (4,)
    pixels; mask_input: the (256, 256) low-res logits given as a mask prompt (its digest is
    kept; see docs/provenance.md); multimask_output / mask_index: the decoder's mode and which
    of its outputs is the mask; mask: the (H, W) result, summarised in ``output``.
    """
    return MaskProvenance(
        kind="prompted",
        prompts=_prompts(points_xy, point_labels, box_xyxy, mask_input),
        model=model_provenance(session),
        preprocessing=preprocessing_provenance(session, image, z, image_path),
        parameters={
            "multimask_output": bool(multimask_output),
            "mask_index": int(mask_index),
            **_base_parameters(session),
            **_plain(dict(extra_parameters or {})),
        },
        review=_check_review({**_empty_review(), **(review or {})}),
        output=None if mask is None else mask_summary(mask),
        **_stamp(),
    )


def predict_best_recorded(
    session,
    image,
    embedding,
    points_xy=None,
    point_labels=None,
    box_xyxy=None,
    *,
    z: int | None = None,
    image_path=None,
) -> tuple[np.ndarray, float, MaskProvenance]:
    """`Session.predict_best` with its record: ((H, W) bool mask, predicted IoU, record).

    The same rule (one click: 3 masks, the most confident that is not nearly the whole frame;
    several points or a box: one), so a front end gets mask and provenance from one call."""
    from ..mask_geometry import best_mask_index

    n_points = 0 if points_xy is None else int(np.asarray(points_xy).reshape(-1, 2).shape[0])
    multimask = box_xyxy is None and n_points == 1
    masks, scores, _ = session.predict(
        embedding, points_xy, point_labels, box_xyxy, multimask=multimask
    )
    best = best_mask_index(masks, scores)
    record = prompted_provenance(
        session,
        image,
        z=z,
        points_xy=points_xy,
        point_labels=point_labels,
        box_xyxy=box_xyxy,
        multimask_output=multimask,
        mask_index=best,
        mask=masks[best],
        image_path=image_path,
    )
    return masks[best], float(scores[best]), record


def automatic_provenance(
    session,
    image,
    records: Iterable[Mapping[str, Any]],
    *,
    z: int | None = None,
    settings: Mapping[str, Any],
    mode: str = "grid",
    image_path=None,
    masks: Sequence[np.ndarray] | None = None,
) -> list[MaskProvenance]:
    """One record per automatic mask of `image` (plane `z`), in the order of `records`.

    records: the generator's records (`AutomaticMaskGenerator.select`): each one's grid point
        ("point_coords") becomes its prompt, with "predicted_iou", "stability_score" and
        "crop_box" kept as parameters to find it again on replay.
    settings: the resolved settings (`sam_core.automatic_settings`) the generator ran with.
    masks: the (H, W) masks, one per record, summarised in ``output`` (else decoded from the
        records' "segmentation" when it is a full mask or COCO RLE).
    """
    model = model_provenance(session)
    preprocessing = preprocessing_provenance(session, image, z, image_path)
    stamp = _stamp()
    base = {"mode": mode, **_plain(dict(settings)), **_base_parameters(session)}
    hw = tuple(preprocessing["image_hw"])
    out = []
    for i, record in enumerate(records):
        mask = masks[i] if masks is not None else _record_mask(record, hw)
        points = np.asarray(record.get("point_coords") or np.zeros((0, 2))).reshape(-1, 2)
        out.append(
            MaskProvenance(
                kind="automatic",
                prompts=_prompts(points, [1] * len(points), None, None),
                model=model,
                preprocessing=preprocessing,
                parameters={
                    **base,
                    **{k: float(record[k]) for k in _SCORES if record.get(k) is not None},
                    "crop_box": [int(v) for v in record.get("crop_box") or []] or None,
                },
                output=None if mask is None else mask_summary(mask),
                **stamp,
            )
        )
    return out


_GENERATOR_EXTRA = ("max_mask_fraction",)
_SCORES = ("predicted_iou", "stability_score")


def generator_settings(generator) -> dict:
    """The settings an `AutomaticMaskGenerator` runs with, as `automatic_provenance` keeps them
    (the user-facing ones of `OFFICIAL_AUTOMATIC_SETTINGS` plus max_mask_fraction)."""
    from ..automatic_settings import OFFICIAL_AUTOMATIC_SETTINGS

    names = (*OFFICIAL_AUTOMATIC_SETTINGS, *_GENERATOR_EXTRA)
    return {name: _plain(getattr(generator, name)) for name in names if hasattr(generator, name)}


def _record_mask(record: Mapping[str, Any], hw: tuple[int, int]) -> np.ndarray | None:
    """The full (H, W) mask of a generator record in any output mode, or None."""
    if record.get("segmentation") is None:
        return None
    from ..automatic.records import decode_segmentation

    local, (x0, y0, x1, y1) = decode_segmentation(dict(record), hw)
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = local
    return mask


def refined_provenance(
    session,
    image,
    *,
    z: int | None = None,
    box_xyxy,
    mask_prompt: np.ndarray | None,
    mask_input: np.ndarray | None,
    mask: np.ndarray | None = None,
    source: Mapping[str, Any] | None = None,
    image_path=None,
    review: Mapping[str, Any] | None = None,
) -> MaskProvenance:
    """The record of an existing object refined by SAM (`sam_core.refine`): its box and its
    mask (the image-frame (H, W) bool `mask_prompt`, kept as RLE so replay can rebuild the
    (256, 256) `mask_input` logits) as prompts, one output.

    source: where the object came from, e.g. {"field": "cellpose", "label": 7}."""
    return MaskProvenance(
        kind="refined",
        prompts=_prompts(None, None, box_xyxy, mask_input, mask_prompt),
        model=model_provenance(session),
        preprocessing=preprocessing_provenance(session, image, z, image_path),
        parameters={
            "multimask_output": False,
            "mask_index": 0,
            "source": _plain(dict(source or {})),
            **_base_parameters(session),
        },
        review=_check_review({**_empty_review(), **(review or {})}),
        output=None if mask is None else mask_summary(mask),
        **_stamp(),
    )


def manual_provenance(
    mask: np.ndarray | None = None,
    *,
    image_hw: Sequence[int] | None = None,
    image_path=None,
    z: int | None = None,
    review: Mapping[str, Any] | None = None,
    tool: str | None = None,
) -> MaskProvenance:
    """The record of a mask drawn by hand (no model, no prompts; replay refuses it)."""
    if image_hw is None and mask is not None:
        image_hw = np.shape(mask)[:2]
    return MaskProvenance(
        kind="manual",
        prompts=_prompts(None, None, None, None),
        model={"name": None, "source": None, "checkpoint_sha256": None, "card": None},
        preprocessing={
            "channels": None,
            "normalisation": None,
            "tiling": None,
            "plane_digest": None,
            "z": z,
            "image": None if image_path is None else str(image_path),
            "image_hw": None if image_hw is None else [int(v) for v in image_hw],
        },
        parameters={"tool": tool},
        review=_check_review({**_empty_review(), **(review or {})}),
        output=None if mask is None else mask_summary(mask),
        **_stamp(),
    )
