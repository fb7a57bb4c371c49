"""Mask quality review storage and ordering (the paper's appendix E protocol), without the App.

Each rating is appended to the detection's ``ratings`` list attribute as
``{"rating": 1..10, "reviewer": str, "time": ISO-8601 UTC, "seconds": float | None}``, with a
single database ``$push``: it is saved the moment it is given, and two reviewers (or two
ratings by one reviewer) are all kept. Review flags (``review_flags``, the provenance's
unclear-boundary / uncertain / reviewed) and a class (the label) are set with `save_flags`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bson import ObjectId

from sam_core import SamscopeError

QUESTIONS = (
    "Does the mask correspond to a valid object?",
    "Does the mask have a clean boundary?",
    "Does the mask correspond to the input (the point or box)?",
)
SCORE_GUIDE = (
    ("1", "No identifiable object: it is not possible to tell what the mask corresponds to."),
    (
        "2-4",
        "Object mostly identifiable, but huge errors (large parts of other objects, "
        "large parts missing, splotchy boundaries cutting through the object).",
    ),
    (
        "5-6",
        "Object identifiable, boundary mostly correct, but major errors (a significant "
        "part missing or added, one area with a very poor boundary).",
    ),
    ("7-9", "Only small, rare errors (a small obscured part missing, small boundary mismatches)."),
    ("10", "Pixel-perfect: no identifiable errors at all."),
)
ORDERS = ("lowest_iou", "highest_iou", "random", "dataset")


class RatingError(SamscopeError, ValueError):
    """A rating that can't be saved: outside 1–10, no reviewer, or an unknown mask."""


@dataclass(frozen=True)
class MaskRef:
    """One mask to review: the sample, the Detections field and the detection in it."""

    sample_id: str
    field: str
    detection_id: str
    predicted_iou: float | None = None
    rated_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_rating(rating: Any) -> int:
    """The rating as an int 1–10, or RatingError naming the problem."""
    if isinstance(rating, bool) or not isinstance(rating, (int, float, str)):
        raise RatingError(f"rating must be a whole number from 1 to 10, got {rating!r}")
    try:
        value = float(rating)
    except ValueError:
        raise RatingError(f"rating must be a whole number from 1 to 10, got {rating!r}") from None
    if value != int(value) or not 1 <= value <= 10:
        raise RatingError(f"rating must be a whole number from 1 to 10, got {rating!r}")
    return int(value)


def review_queue(
    collection,
    field: str,
    reviewer: str | None = None,
    order: str = "lowest_iou",
    include_rated: bool = False,
    seed: int = 0,
) -> list[MaskRef]:
    """The masks of `field` in `collection` to review, in `order`:
    "lowest_iou" (predicted IoU ascending, unknown last), "highest_iou", "random" (seeded, as
    the paper's random queue) or "dataset". Masks `reviewer` already rated are left out unless
    `include_rated`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    sample_ids, det_ids, ious, ratings = collection.values(
        [
            "id",
            f"{field}.detections.id",
            f"{field}.detections.predicted_iou",
            f"{field}.detections.ratings",
        ]
    )
    refs = []
    for sample_id, ids, scores, rated in zip(sample_ids, det_ids, ious, ratings, strict=True):
        for det_id, iou, det_ratings in zip(
            ids or [],
            scores or [None] * len(ids or []),
            rated or [None] * len(ids or []),
            strict=True,
        ):
            by = tuple(r.get("reviewer", "") for r in det_ratings or [])
            if reviewer is not None and reviewer in by and not include_rated:
                continue
            refs.append(MaskRef(sample_id, field, det_id, iou, by))
    if order in ("lowest_iou", "highest_iou"):
        sign = 1 if order == "lowest_iou" else -1
        refs.sort(key=lambda r: (r.predicted_iou is None, sign * (r.predicted_iou or 0.0)))
    elif order == "random":
        random.Random(seed).shuffle(refs)
    return refs


def _detection_filter(ref: MaskRef) -> dict[str, Any]:
    """The sample only if `ref`'s field holds that detection: a deleted field or detection
    then matches nothing (a RatingError naming it) instead of a database error."""
    return {
        "_id": ObjectId(ref.sample_id),
        f"{ref.field}.detections._id": ObjectId(ref.detection_id),
    }


def save_rating(
    dataset, ref: MaskRef, rating: Any, reviewer: str, seconds: float | None = None
) -> dict[str, Any]:
    """Append a rating to the detection `ref` points to, in the database, now.

    rating: 1–10. reviewer: non-empty name. seconds: time spent on the mask, if known.
    Returns the stored entry. Raises RatingError for bad input or a mask that is not there.
    """
    value = check_rating(rating)
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise RatingError("a rating needs the reviewer's name")
    entry = {
        "rating": value,
        "reviewer": reviewer,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": None if seconds is None else round(float(seconds), 2),
    }
    result = dataset._sample_collection.update_one(
        _detection_filter(ref),
        {"$push": {f"{ref.field}.detections.$[d].ratings": entry}},
        array_filters=[{"d._id": ObjectId(ref.detection_id)}],
    )
    if result.modified_count != 1:
        raise RatingError(
            f"no detection {ref.detection_id} in field {ref.field!r} of sample {ref.sample_id}"
        )
    dataset.reload()  # in-memory samples see the new rating
    return entry


def save_flags(dataset, ref: MaskRef, flags: Iterable[str], label: str | None = None) -> list[str]:
    """Set a detection's review flags (``review_flags``: any of unclear-boundary, uncertain,
    reviewed, as napari's annotator sets them) and, if given, its class (the detection's
    label), in the database, now. They travel with the ratings into the provenance of
    exported masks (`samscope_fiftyone.engine.export_reviewed`).
    Returns the flags stored. Raises RatingError for an unknown flag or mask."""
    from sam_core.provenance import FLAGS

    flags = list(dict.fromkeys(str(f) for f in flags))
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise RatingError(f"unknown review flag(s) {unknown}; flags are {', '.join(FLAGS)}")
    changes: dict[str, Any] = {f"{ref.field}.detections.$[d].review_flags": flags}
    if label is not None:
        changes[f"{ref.field}.detections.$[d].label"] = str(label)
    result = dataset._sample_collection.update_one(
        _detection_filter(ref),
        {"$set": changes},
        array_filters=[{"d._id": ObjectId(ref.detection_id)}],
    )
    if result.matched_count != 1:
        raise RatingError(
            f"no detection {ref.detection_id} in field {ref.field!r} of sample {ref.sample_id}"
        )
    dataset.reload()
    return flags


def rating_rows(collection, fields: Iterable[str]) -> list[dict[str, Any]]:
    """One row per rating in `fields`: field, rating, reviewer, predicted_iou,
    stability_score (None where the detection has none)."""
    rows = []
    for field in fields:
        values = collection.values(
            [
                f"{field}.detections.ratings",
                f"{field}.detections.predicted_iou",
                f"{field}.detections.stability_score",
            ]
        )
        for ratings, ious, stabilities in zip(*values, strict=True):
            n = len(ratings or [])
            ious = ious or [None] * n
            stabilities = stabilities or [None] * n
            for det_ratings, iou, stability in zip(ratings or [], ious, stabilities, strict=True):
                rows.extend(
                    {
                        "field": field,
                        "rating": int(entry["rating"]),
                        "reviewer": entry.get("reviewer"),
                        "predicted_iou": iou,
                        "stability_score": stability,
                    }
                    for entry in det_ratings or []
                )
    return rows
