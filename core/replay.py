"""Regenerate a mask from its provenance record (`sam_core.provenance`), or say what changed.

    mask = replay(record, image)                          # (H, W) bool, bit-identical
    result = replay_detailed(record, image)               # + what changed, identical or not

Replay runs the path that made the mask again through a `Session`: `Session.predict` with the
recorded prompts for "prompted", `sam_core.refine.refine_one` with the recorded object mask
for "refined", the automatic generator with the recorded settings for "automatic" (then the
mask of the recorded grid point and scores). Before it does, it compares what the record names
with what is here: the weights' sha256, the samscope version, the image's pixels, the
channels / normalisation / tiling and the precision. A difference raises `ReplayMismatch`
naming each change, unless `allow_changes` (then a warning, and the mask is made with what is
here). Nothing is ever silently substituted.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProvenanceError
from .provenance import MaskProvenance, mask_digest

__all__ = ["Change", "ReplayMismatch", "ReplayResult", "ReplayWarning", "replay", "session_for"]


@dataclass(frozen=True)
class Change:
    """One thing that differs between a record and now: what, the recorded value, now's."""

    what: str
    recorded: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.what}: {_short(self.recorded)} -> {_short(self.now)}"


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 40 and " " not in text else text


class ReplayMismatch(ProvenanceError):
    """The model, samscope version, image or a setting differs from the record's."""

    def __init__(self, changes: list[Change], where: str = "") -> None:
        self.changes = list(changes)
        listed = "; ".join(str(c) for c in self.changes)
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}can't replay as recorded, {len(self.changes)} change(s): {listed} "
            "(allow_changes / --allow-changes makes the mask with what is here, with a warning)"
        )


class ReplayWarning(UserWarning):
    """A replay that ran with changes (allow_changes=True)."""


@dataclass(frozen=True)
class ReplayResult:
    """mask (H, W) bool; changes found (empty: replayed as recorded); identical: the mask's
    digest equals the record's ``output.sha256`` (None when the record has no output)."""

    mask: np.ndarray
    changes: list[Change] = field(default_factory=list)
    identical: bool | None = None
    score: float | None = None


# --------------------------------------------------------------------------- sessions


def session_for(record: MaskProvenance, device: str | None = None, cache_dir=None):
    """A `Session` with the record's model, precision and tiling.

    device: None uses the recorded device when it is available here, else the CPU.
    Raises ProvenanceError when the record has no model (manual) or its checkpoint file is
    missing."""
    from .registry import get_spec
    from .session import Session
    from .tiling import DEFAULT_HALO, DEFAULT_MAX_SIDE, DEFAULT_TILE_SHAPE

    source = record.model.get("source") or record.model.get("name")
    if source is None:
        raise ProvenanceError(f"a {record.kind} mask names no model; it can't be replayed")
    source = str(source)
    sha = record.model.get("checkpoint_sha256")
    try:
        get_spec(source)
    except KeyError:
        if not Path(source).expanduser().is_file():
            raise ProvenanceError(
                f"the model that made this mask, {source!r} (weights sha256 {sha}), is not a "
                "known model name and no such checkpoint file exists here; put the file back "
                "or pass the model (session= / --model)"
            ) from None
    else:
        from .checkpoints import fetch_checkpoint

        fetch_checkpoint(get_spec(source).name, progress=False)
    tiling = record.preprocessing.get("tiling") or {}
    return Session(
        source,
        device=device or _device_here(record.parameters.get("device")),
        precision=str(record.parameters.get("precision") or "fp32"),
        cache_dir=cache_dir,
        max_side=int(tiling.get("max_side", DEFAULT_MAX_SIDE)),
        tile_shape=tuple(tiling.get("tile_shape", DEFAULT_TILE_SHAPE)),
        halo=tuple(tiling.get("halo", DEFAULT_HALO)),
    )


def _device_here(recorded: str | None) -> str:
    if recorded and recorded.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return recorded
    return "cpu"


# ---------------------------------------------------------------------------- checks


def find_changes(record: MaskProvenance, session, image) -> list[Change]:
    """What differs between `record` and replaying it on `session` with `image` (a
    `SessionImage` loaded with the record's channels and normalisation)."""
    from . import __version__
    from .provenance import model_provenance, preprocessing_provenance

    changes = []
    model_now = model_provenance(session)
    for key in ("checkpoint_sha256", "name"):
        if record.model.get(key) != model_now.get(key):
            changes.append(Change(f"model {key}", record.model.get(key), model_now.get(key)))
    if record.samscope_version != __version__:
        changes.append(Change("samscope_version", record.samscope_version, __version__))
    pre_now = preprocessing_provenance(session, image, record.preprocessing.get("z"))
    for key in ("plane_digest", "channels", "normalisation", "tiling", "image_hw"):
        if record.preprocessing.get(key) != pre_now.get(key):
            what = "image pixels (plane_digest)" if key == "plane_digest" else key
            changes.append(Change(what, record.preprocessing.get(key), pre_now.get(key)))
    if record.parameters.get("precision", "fp32") != session.precision:
        changes.append(Change("precision", record.parameters.get("precision"), session.precision))
    return changes


def _load_image(record: MaskProvenance, image, session):
    from .session_image import SessionImage

    if image is None:
        image = record.preprocessing.get("image")
        if image is None:
            raise ProvenanceError("the record names no image file; pass the image")
        if not Path(image).is_file():
            raise ProvenanceError(f"the image of this mask, {image}, is not there; pass it")
    if isinstance(image, SessionImage):
        return image
    channels = record.preprocessing.get("channels")
    if isinstance(channels, list):
        channels = tuple(channels)
    return session.load(image, channels, record.preprocessing.get("normalisation") or "auto")


# ---------------------------------------------------------------------------- replay


def replay(
    record: MaskProvenance | Mapping[str, Any],
    image=None,
    *,
    session=None,
    allow_changes: bool = False,
) -> np.ndarray:
    """The (H, W) bool mask `record` describes, made again (see `replay_detailed`)."""
    return replay_detailed(record, image, session=session, allow_changes=allow_changes).mask


def replay_detailed(
    record: MaskProvenance | Mapping[str, Any],
    image=None,
    *,
    session=None,
    allow_changes: bool = False,
) -> ReplayResult:
    """Regenerate the mask of `record` (a `MaskProvenance` or its dict).

    image: array, path or `SessionImage` (default: the record's ``preprocessing.image`` file),
        read with the record's channels and normalisation.
    session: the `Session` to use (default `session_for(record)`).
    Raises:
        ReplayMismatch: model sha256, name, samscope version, image pixels, channels,
            normalisation, tiling or precision differ, and not `allow_changes` (then a
            `ReplayWarning` names them).
        ProvenanceError: a manual record, a missing model file or image, a mask prompt known
            only by its digest, an automatic mask the generator no longer makes.
    """
    if not isinstance(record, MaskProvenance):
        record = MaskProvenance.from_dict(record)
    if record.kind == "manual":
        raise ProvenanceError("a manual (hand-drawn) mask has no prompts to replay")
    session = session or session_for(record)
    image = _load_image(record, image, session)
    changes = find_changes(record, session, image)
    if changes and not allow_changes:
        raise ReplayMismatch(changes)
    if changes:
        warnings.warn(
            "replaying with changes: " + "; ".join(str(c) for c in changes),
            ReplayWarning,
            stacklevel=2,
        )
    z = record.preprocessing.get("z")
    if record.kind == "automatic":
        mask, score = _replay_automatic(record, session, image, z)
    elif record.kind == "refined":
        mask, score = _replay_refined(record, session, image, z)
    else:
        mask, score = _replay_prompted(record, session, image, z)
    recorded = (record.output or {}).get("sha256")
    identical = None if recorded is None else mask_digest(mask) == recorded
    return ReplayResult(mask, changes, identical, score)


def _replay_prompted(record, session, image, z) -> tuple[np.ndarray, float]:
    prompts = record.prompts
    if prompts.get("mask_input_sha256") and not prompts.get("mask_prompt_rle"):
        raise ProvenanceError(
            "this mask was made with a mask prompt (low-res logits) that the record keeps only "
            "as a digest; it can't be replayed"
        )
    points = prompts.get("points_xy") or None
    labels = prompts.get("point_labels") or None
    box = prompts.get("box_xyxy")
    mask_input = None
    if prompts.get("mask_prompt_rle"):
        from .mask_geometry import decode_rle
        from .refine import mask_to_logits

        mask_input = mask_to_logits(decode_rle(prompts["mask_prompt_rle"]))[None]
    params = record.parameters
    embedding = session.embed(image, z)
    masks, scores, _ = session.predict(
        embedding,
        points=points,
        labels=labels,
        box=box,
        mask_input=mask_input,
        multimask=bool(params.get("multimask_output", False)),
    )
    index = int(params.get("mask_index", 0))
    if not 0 <= index < len(masks):
        raise ProvenanceError(f"mask_index {index} but the decoder gave {len(masks)} mask(s)")
    return masks[index], float(scores[index])


def _replay_refined(record, session, image, z) -> tuple[np.ndarray, float]:
    from .mask_geometry import decode_rle
    from .refine import refine_one

    rle = record.prompts.get("mask_prompt_rle")
    if rle is None:
        if record.prompts.get("box_xyxy") is None:
            raise ProvenanceError("a refined record without its object mask or box")
        return _replay_prompted(record, session, image, z)
    embedding = session.embed(image, z)
    mask, score, _, _ = refine_one(session, embedding, decode_rle(rle), use_mask=True)
    return mask, score


_GENERATOR_KEYS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_n_layers",
    "min_mask_region_area",
    "max_mask_fraction",
)


_AUTOMATIC_RUNS: OrderedDict[tuple, list[dict]] = OrderedDict()  # the last few generator runs
_AUTOMATIC_RUNS_KEPT = 4
_AUTOMATIC_LOCK = threading.Lock()


def _automatic_records(session, image, z, settings: dict) -> list[dict]:
    """The generator's records (box-local masks) for `image` (plane `z`) with `settings`; the
    last few runs are kept, so the masks of one image replay with one generator run even
    across files (a sidecar and a COCO file of one image)."""
    from .embedding_keys import plane_digest

    key = (
        session.model_id,
        session.precision,
        str(session.predictor.device),
        repr(session.tile_layout(image.image_hw)),
        plane_digest(image.plane(z), image.channels),
        repr(image.channels),
        image.normalization,
        z,
        repr(sorted(settings.items())),
    )
    with _AUTOMATIC_LOCK:
        if key in _AUTOMATIC_RUNS:
            _AUTOMATIC_RUNS.move_to_end(key)
            return _AUTOMATIC_RUNS[key]
    generator = session.automatic_generator(output_mode="cropped_mask", **settings)
    if "max_mask_fraction" in settings:
        generator.max_mask_fraction = settings["max_mask_fraction"]
    records = session.generate(image, z, generator=generator)
    with _AUTOMATIC_LOCK:
        _AUTOMATIC_RUNS[key] = records
        while len(_AUTOMATIC_RUNS) > _AUTOMATIC_RUNS_KEPT:
            _AUTOMATIC_RUNS.popitem(last=False)
    return records


def _replay_automatic(record, session, image, z) -> tuple[np.ndarray, float]:
    from .automatic.records import decode_segmentation

    params = record.parameters
    if params.get("mode", "grid") != "grid":
        raise ProvenanceError(f"automatic mode {params.get('mode')!r} can't be replayed here")
    settings = {k: params[k] for k in _GENERATOR_KEYS if k in params}
    if not record.prompts.get("points_xy"):
        raise ProvenanceError("an automatic record without its grid point can't be replayed")
    point = [float(v) for v in record.prompts["points_xy"][0]]
    crop = [int(v) for v in params.get("crop_box") or []]
    found = [
        r
        for r in _automatic_records(session, image, z, settings)
        if [float(v) for v in r["point_coords"][0]] == point
        and (not crop or [int(v) for v in r["crop_box"]] == crop)
    ]
    if not found:
        raise ProvenanceError(
            f"the generator no longer makes a mask from grid point {point} with these settings "
            "(model or thresholds changed?)"
        )
    target = float(params.get("predicted_iou", 0.0))
    best = min(found, key=lambda r: abs(float(r["predicted_iou"]) - target))
    hw = image.image_hw
    local, (x0, y0, x1, y1) = decode_segmentation(best, hw)
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = local
    return mask, float(best["predicted_iou"])
