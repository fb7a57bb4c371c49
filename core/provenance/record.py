"""The provenance record itself: `MaskProvenance` (schema `SCHEMA`, version `SCHEMA_VERSION`;
docs/provenance.md), its validation, and the digests that name masks and arrays."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProvenanceError

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
        from .. import __version__

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
