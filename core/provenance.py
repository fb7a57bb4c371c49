"""How a mask was made: one versioned record per mask, for every front end (the paper's §4
data engine keeps masks, prompts and models together; a mask that forgets how it was made
can't be reproduced or retrained on with confidence).

    record = prompted_provenance(session, image, z=None, points_xy=[[40, 60]],
                                 point_labels=[1], box_xyxy=None, mask_input=None,
                                 multimask_output=True, mask_index=2, mask=mask)
    write_sidecar("mask.provenance.json", [record])
    records = read_sidecar("mask.provenance.json")       # ProvenanceError if unusable
    mask = sam_core.replay.replay(records[0], image)     # the same mask, bit for bit

The schema (``SCHEMA`` / ``SCHEMA_VERSION``) is documented field by field in
docs/provenance.md. Coordinates are pixels of the original image plane, (x, y) = (column,
row). Records are plain JSON once `to_dict` is called; CLI sidecars, COCO annotations'
``samscope_provenance``, FiftyOne detections' ``samscope_provenance`` attribute and napari
layer metadata all carry the same dict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProvenanceError

__all__ = [
    "FLAGS",
    "KINDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "MaskProvenance",
    "array_digest",
    "automatic_provenance",
    "generator_settings",
    "manual_provenance",
    "mask_digest",
    "mask_summary",
    "model_provenance",
    "predict_best_recorded",
    "preprocessing_provenance",
    "prompted_provenance",
    "read_json",
    "read_sidecar",
    "records_from_json",
    "refined_provenance",
    "sidecar_path",
    "write_sidecar",
]

SCHEMA = "samscope.provenance"
SCHEMA_VERSION = 1  # an integer, bumped on every incompatible change (docs/provenance.md)
KINDS = ("prompted", "automatic", "refined", "manual")
FLAGS = ("unclear-boundary", "uncertain", "reviewed")
SIDECAR_SUFFIX = ".provenance.json"
_FIELDS = (
    "kind",
    "prompts",
    "model",
    "preprocessing",
    "parameters",
    "review",
    "samscope_version",
    "created",
)


def _empty_review() -> dict:
    return {"class": None, "flags": [], "rating": None}


@dataclass(frozen=True)
class MaskProvenance:
    """How one mask was made (schema ``samscope.provenance`` version 1; docs/provenance.md).

    kind: "prompted" (points/box/mask prompt on SAM), "automatic" (the grid generator, §7.1),
        "refined" (an existing segmentation's object given to SAM as box + mask prompt) or
        "manual" (drawn by hand; no model).
    prompts: {"points_xy": [[x, y], ...] pixels, "point_labels": [1, 0, ...], "box_xyxy":
        [x0, y0, x1, y1] | None, "mask_input_sha256": str | None, "mask_prompt_rle": COCO RLE
        of the image-frame mask a mask prompt was made from | None}.
    model: {"name", "source" (registry name or checkpoint path), "checkpoint_sha256", "card"}.
    preprocessing: {"channels", "normalisation", "tiling", "plane_digest", "z", "image",
        "image_hw"}.
    parameters: {"multimask_output", "mask_index", "precision", "device", ...; automatic:
        "mode" and the generator's settings}.
    review: {"class": str | None, "flags": [...FLAGS], "rating": 1-10 | None}.
    output: the mask it produced, {"sha256", "area_px", "shape"} (see `mask_summary`) | None.
    """

    kind: str
    prompts: dict
    model: dict
    preprocessing: dict
    parameters: dict
    review: dict = field(default_factory=_empty_review)
    samscope_version: str = ""
    created: str = ""
    output: dict | None = None

    def to_dict(self) -> dict:
        """Plain-JSON dict with ``schema`` and ``schema_version`` first."""
        body = {name: _plain(getattr(self, name)) for name in (*_FIELDS, "output")}
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **body}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskProvenance:
        """The record of a dict written by `to_dict` (this or an older schema version).

        Raises:
            ProvenanceError: not a mapping, another schema, a newer schema version (written by
                a newer samscope), a missing field or an unknown kind.
        """
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"a provenance record must be a JSON object, got {data!r:.80}")
        _check_header(data.get("schema"), data.get("schema_version"))
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ProvenanceError(f"provenance record lacks the field(s) {', '.join(missing)}")
        if data["kind"] not in KINDS:
            raise ProvenanceError(f"provenance kind {data['kind']!r} is not one of {KINDS}")
        for name in ("prompts", "model", "preprocessing", "parameters", "review"):
            if not isinstance(data[name], Mapping):
                raise ProvenanceError(f"provenance field {name!r} must be an object")
        review = {**_empty_review(), **data["review"]}
        return cls(
            kind=str(data["kind"]),
            prompts=dict(data["prompts"]),
            model=dict(data["model"]),
            preprocessing=dict(data["preprocessing"]),
            parameters=dict(data["parameters"]),
            review=_check_review(review),
            samscope_version=str(data["samscope_version"]),
            created=str(data["created"]),
            output=None if data.get("output") is None else dict(data["output"]),
        )

    def with_review(self, **changes: Any) -> MaskProvenance:
        """A copy with review fields changed: ``class`` (or ``class_``), ``flags``, ``rating``.

        Raises ProvenanceError for an unknown key, a flag not in `FLAGS` or a rating outside
        1-10."""
        if "class_" in changes:
            changes["class"] = changes.pop("class_")
        unknown = sorted(set(changes) - {"class", "flags", "rating"})
        if unknown:
            raise ProvenanceError(f"unknown review field(s) {unknown}; use class, flags, rating")
        return dataclasses.replace(self, review=_check_review({**self.review, **changes}))

    def with_output(self, mask: np.ndarray) -> MaskProvenance:
        """A copy that records the mask it produced (`mask_summary`)."""
        return dataclasses.replace(self, output=mask_summary(mask))


def _check_header(schema: Any, version: Any) -> None:
    """ProvenanceError unless (schema, version) is one this samscope reads."""
    if schema != SCHEMA:
        raise ProvenanceError(
            f"not a samscope provenance record (schema {schema!r}, expected {SCHEMA!r})"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProvenanceError(f"provenance schema_version must be an integer >= 1: {version!r}")
    if version > SCHEMA_VERSION:
        from . import __version__

        raise ProvenanceError(
            f"provenance of schema version {version}, newer than this samscope {__version__} "
            f"reads (up to version {SCHEMA_VERSION}); upgrade samscope to use it"
        )


def _check_review(review: dict) -> dict:
    flags = review.get("flags") or []
    if isinstance(flags, str):
        flags = [flags]
    bad = [f for f in flags if f not in FLAGS]
    if bad:
        raise ProvenanceError(f"unknown review flag(s) {bad}; flags are {', '.join(FLAGS)}")
    rating = review.get("rating")
    if rating is not None:
        if not isinstance(rating, (int, float, np.integer)) or not 1 <= float(rating) <= 10:
            raise ProvenanceError(f"a review rating is 1-10 or None, got {rating!r}")
        rating = int(rating) if float(rating).is_integer() else float(rating)
    label_class = review.get("class")
    return {
        **review,
        "class": None if label_class in (None, "") else str(label_class),
        "flags": list(dict.fromkeys(str(f) for f in flags)),
        "rating": rating,
    }


# ------------------------------------------------------------------------- digests


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of a mask's shape and bits (bool (H, W), packed row-major): equal digests mean
    bit-identical masks."""
    mask = np.asarray(mask).astype(bool, copy=False)
    digest = hashlib.sha256(repr(tuple(mask.shape)).encode())
    digest.update(np.packbits(mask, axis=None).tobytes())
    return digest.hexdigest()


def mask_summary(mask: np.ndarray) -> dict:
    """{"sha256": `mask_digest`, "area_px": true pixels, "shape": [H, W]} of a (H, W) mask."""
    mask = np.asarray(mask).astype(bool, copy=False)
    return {
        "sha256": mask_digest(mask),
        "area_px": int(np.count_nonzero(mask)),
        "shape": [int(s) for s in mask.shape],
    }


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes (a mask prompt's low-res logits)."""
    array = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.sha256(repr((array.shape, array.dtype.str)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- builders


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
    from .training.checkpointing import card_beside

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
    from .embedding_keys import plane_digest

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
    from . import __version__

    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"samscope_version": __version__, "created": created}


def _prompts(points_xy, point_labels, box_xyxy, mask_input, mask_prompt=None) -> dict:
    points = [] if points_xy is None else np.asarray(points_xy, np.float64).reshape(-1, 2)
    labels = [] if point_labels is None else np.asarray(point_labels).reshape(-1)
    if len(points) != len(labels):
        raise ProvenanceError(f"{len(points)} points but {len(labels)} point labels")
    rle = None
    if mask_prompt is not None:
        from .mask_geometry import encode_rle

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
    from .mask_geometry import best_mask_index

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
    from .automatic_settings import OFFICIAL_AUTOMATIC_SETTINGS

    names = (*OFFICIAL_AUTOMATIC_SETTINGS, *_GENERATOR_EXTRA)
    return {name: _plain(getattr(generator, name)) for name in names if hasattr(generator, name)}


def _record_mask(record: Mapping[str, Any], hw: tuple[int, int]) -> np.ndarray | None:
    """The full (H, W) mask of a generator record in any output mode, or None."""
    if record.get("segmentation") is None:
        return None
    from .automatic.records import decode_segmentation

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


# --------------------------------------------------------------------------- sidecars


def sidecar_path(output: str | Path) -> Path:
    """The sidecar of an output file: ``mask.png`` → ``mask.provenance.json``."""
    output = Path(output)
    name = output.name
    for suffix in (".ome.tiff", ".ome.tif", *output.suffixes[-1:]):
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + SIDECAR_SUFFIX)


def write_sidecar(
    path: str | Path, records: Sequence[MaskProvenance], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write `records` (mask i of the output is record i) as one JSON file, atomically.

    extra: top-level keys describing the output (e.g. {"output": "mask.png", "labels": ...});
    they may not shadow ``schema``, ``schema_version`` or ``masks``."""
    from . import __version__
    from .image_io import write_bytes

    extra = _plain(dict(extra or {}))
    clash = {"schema", "schema_version", "masks"} & set(extra)
    if clash:
        raise ProvenanceError(f"sidecar extra keys {sorted(clash)} are reserved")
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "samscope_version": __version__,
        **extra,
        "masks": [r.to_dict() for r in records],
    }
    return write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())


def read_sidecar(path: str | Path) -> list[MaskProvenance]:
    """The records of a sidecar written by `write_sidecar`.

    Raises:
        ProvenanceError: unreadable or not JSON, another schema, a newer version, bad records.
    """
    return records_from_json(read_json(path), str(path))[0]


def read_json(path: str | Path) -> Any:
    """The JSON document of a file; ProvenanceError when missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"no provenance file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvenanceError(f"{path} is not a readable JSON file: {exc}") from None


def records_from_json(document: Any, where: str = "the file") -> tuple[list[MaskProvenance], dict]:
    """(records, extra top-level keys) of a sidecar document (see `write_sidecar`).

    Raises ProvenanceError naming `where` and, for a bad record, its index."""
    if not isinstance(document, Mapping) or "masks" not in document:
        raise ProvenanceError(f"{where} is not a samscope provenance sidecar (no 'masks' list)")
    try:
        _check_header(document.get("schema"), document.get("schema_version"))
    except ProvenanceError as exc:
        raise ProvenanceError(f"{where}: {exc}") from None
    records = []
    for i, item in enumerate(document["masks"]):
        try:
            records.append(MaskProvenance.from_dict(item))
        except ProvenanceError as exc:
            raise ProvenanceError(f"{where}, mask {i}: {exc}") from None
    extra = {k: v for k, v in document.items() if k not in ("schema", "schema_version", "masks")}
    return records, extra


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays, tuples and paths to plain Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
