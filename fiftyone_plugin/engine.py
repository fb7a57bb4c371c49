"""The data engine's FiftyOne hand-offs (paper §4): reviewed masks out to a training folder and
a folder to correct, labels (napari's, with provenance) back in, and an existing segmentation
refined by SAM.

* `export_reviewed`: masks whose 1-10 ratings (``ratings`` on each detection, see
  `samscope_fiftyone.review`) average >= a threshold become training data (``images/`` +
  ``labels/<stem>.tif`` + provenance sidecars, what ``samscope finetune`` reads); samples with
  low-rated, unrated or no masks go to ``to_correct/`` for napari's series annotator.
* `import_labels`: an engine folder → detections carrying each object's provenance (class,
  flags, rating included).
* `refine_detections`: a Detections or Segmentation field's objects → SAM-refined masks
  (`sam_core.refine.refine_instances`), each with its provenance (kind "refined").

Folder layout and sidecars are core's (`sam_core.cli_engine`, `sam_core.provenance`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np

from sam_core.cli_engine import (
    TO_CORRECT_DIR,
    label_records,
    labelled_pairs,
    write_labelled_example,
)
from sam_core.errors import ImageError, ProvenanceError
from sam_core.image_io import read_image
from sam_core.provenance import MaskProvenance, manual_provenance
from sam_core.refine import refine_instances
from sam_core.session import Session, as_session_image

from .conversion import detection_to_mask, mask_to_detection

PROVENANCE_ATTRIBUTE = "samscope_provenance"


class EngineFieldError(ProvenanceError):
    """A field the engine needs is missing or holds another kind of label."""


# ------------------------------------------------------------------------------ helpers


def _name(collection) -> str:
    """The dataset name of a dataset or a view."""
    return getattr(collection, "dataset_name", None) or collection.name


def _check_field(collection, field: str, kinds: tuple[type, ...]) -> type:
    schema = collection.get_field_schema(flat=True)
    if field not in schema:
        fields = sorted(
            name
            for name, f in schema.items()
            if getattr(f, "document_type", None) in (fo.Detections, fo.Segmentation)
        )
        raise EngineFieldError(
            f"field {field!r} does not exist on dataset {_name(collection)!r} (any ratings were "
            f"stored on its detections; nothing was written). Mask fields there: "
            f"{', '.join(fields) or 'none'}"
        )
    document_type = getattr(schema[field], "document_type", None)
    if document_type not in kinds:
        kind = document_type.__name__ if document_type else type(schema[field]).__name__
        wanted = " or ".join(k.__name__ for k in kinds)
        raise EngineFieldError(f"field {field!r} holds {kind}, not {wanted}")
    return document_type


def mean_rating(detection: fo.Detection) -> float | None:
    """The mean of a detection's 1-10 ratings (the review operator's), or None if unrated."""
    ratings = detection.get_attribute_value("ratings", None) or []
    values = [float(r["rating"]) for r in ratings if r.get("rating") is not None]
    return float(np.mean(values)) if values else None


def detection_record(detection: fo.Detection, mask: np.ndarray, field: str) -> MaskProvenance:
    """The detection's provenance (its ``samscope_provenance``, else a manual record), with
    its class (label), flags (``review_flags``) and mean rating in ``review``."""
    stored = detection.get_attribute_value(PROVENANCE_ATTRIBUTE, None)
    record = (
        MaskProvenance.from_dict(stored)
        if stored is not None
        else manual_provenance(mask, tool=f"fiftyone:{field}")
    )
    rating = mean_rating(detection)
    flags = detection.get_attribute_value("review_flags", None)
    changes: dict[str, Any] = {"rating": None if rating is None else round(rating, 2)}
    if detection.label and detection.label != "object":
        changes["class"] = detection.label
    if flags is not None:
        changes["flags"] = list(flags)
    return record.with_review(**changes)


def _label_image(masks: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """(H, W) uint32, mask i → id i + 1, larger masks painted first (smaller stay visible)."""
    out = np.zeros(hw, dtype=np.uint32)
    for i in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        out[masks[i]] = i + 1
    return out


def _stems(samples) -> dict[str, str]:
    """sample id → a file stem unique in the export (the file's, + the id on a clash)."""
    seen: dict[str, int] = {}
    out = {}
    for sample in samples:
        stem = Path(sample.filepath).stem
        seen[stem] = seen.get(stem, 0) + 1
        out[sample.id] = stem if seen[stem] == 1 else f"{stem}_{sample.id}"
    return out


# ------------------------------------------------------------------------------ export


def export_reviewed(
    collection,
    field: str,
    min_rating: float,
    out_dir: str | Path,
    unrated: str = "correct",
    overwrite_corrections: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Write the reviewed masks of `field` (Detections) in `collection` to an engine folder.

    Accepted (mean rating >= `min_rating`) masks of each sample → ``<out>/images`` +
    ``<out>/labels/<stem>.tif`` + ``<stem>.provenance.json``. Samples with a mask rated lower,
    with no masks, or (unrated="correct") with unrated masks → ``<out>/to_correct`` with every
    mask they have as labels. A ``to_correct/labels/<stem>.tif`` already there (maybe corrected
    in napari) is kept unless `overwrite_corrections`.
    Returns counts and the folders. Raises EngineFieldError (nothing written) for a missing
    field or one that is not Detections; ImageError for a missing image file.
    """
    if unrated not in ("correct", "ignore"):
        raise ValueError(f"unrated must be 'correct' or 'ignore', got {unrated!r}")
    _check_field(collection, field, (fo.Detections,))
    if not 1 <= float(min_rating) <= 10:
        raise ProvenanceError(f"min_rating is on the review's 1-10 scale, got {min_rating}")
    out_dir = Path(out_dir)
    correct_dir = out_dir / TO_CORRECT_DIR
    summary = {"training_images": 0, "accepted_masks": 0, "to_correct": 0, "kept_corrections": 0}
    dataset_name = _name(collection)
    samples = list(collection.select_fields(field).iter_samples())
    stems = _stems(samples)
    for done, sample in enumerate(samples, start=1):
        path = Path(sample.filepath)
        if not path.is_file():
            raise ImageError(f"sample {sample.id}: image file {path} is missing")
        hw = as_session_image(path).image_hw
        detections = (sample[field].detections if sample[field] is not None else []) or []
        accepted, everything, needs_fix = [], [], not detections
        for detection in detections:
            mask = detection_to_mask(detection, hw)
            record = detection_record(detection, mask, field)
            rating = record.review["rating"]
            everything.append((mask, record))
            if rating is not None and rating >= min_rating:
                accepted.append((mask, record))
            elif rating is not None or unrated == "correct":
                needs_fix = True
        stem = stems[sample.id]
        if accepted:
            masks = [m for m, _ in accepted]
            write_labelled_example(
                out_dir,
                stem,
                path,
                _label_image(masks, hw),
                [r for _, r in accepted],
                {"dataset": dataset_name, "field": field, "sample_id": sample.id},
            )
            summary["training_images"] += 1
            summary["accepted_masks"] += len(accepted)
        if needs_fix:
            summary["to_correct"] += 1
            if (correct_dir / "labels" / f"{stem}.tif").is_file() and not overwrite_corrections:
                summary["kept_corrections"] += 1
            else:
                masks = [m for m, _ in everything]
                write_labelled_example(
                    correct_dir,
                    stem,
                    path,
                    _label_image(masks, hw) if masks else None,
                    [r for _, r in everything],
                    {"dataset": dataset_name, "field": field, "sample_id": sample.id},
                )
        if progress is not None:
            progress(done, len(samples))
    return {
        **summary,
        "min_rating": float(min_rating),
        "training_folder": str(out_dir),
        "to_correct_folder": str(correct_dir),
    }


def export_reviewed_by_name(
    name: str, field: str, min_rating: float, out_dir, unrated: str = "correct"
) -> dict[str, Any]:
    """`export_reviewed` on the whole dataset `name` (``samscope export-reviewed``)."""
    if not fo.dataset_exists(name):
        raise EngineFieldError(f"no FiftyOne dataset named {name!r}")
    return export_reviewed(fo.load_dataset(name), field, min_rating, out_dir, unrated)


# ------------------------------------------------------------------------------ import


def labels_to_detections(
    label_image: np.ndarray, records: dict[int, MaskProvenance]
) -> fo.Detections:
    """A (H, W) instance label image → one detection per id, carrying its record: label =
    the review class (else "object"), ``samscope_provenance``, ``review_flags``, and the
    record's rating as a ``ratings`` entry (reviewer "provenance")."""
    detections = []
    for label in (int(v) for v in np.unique(label_image) if v != 0):
        mask = label_image == label
        record = records.get(label) or manual_provenance(mask, tool="labels")
        review = record.review
        extra: dict[str, Any] = {
            PROVENANCE_ATTRIBUTE: record.to_dict(),
            "review_flags": list(review.get("flags") or []),
            "label_id": label,
        }
        if review.get("rating") is not None:
            extra["ratings"] = [
                {
                    "rating": review["rating"],
                    "reviewer": "provenance",
                    "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "seconds": None,
                }
            ]
        detection = mask_to_detection(mask, review.get("class") or "object", **extra)
        if detection is not None:
            detections.append(detection)
    return fo.Detections(detections=detections)


def import_labels(folder: str | Path, dataset, field: str = "corrected") -> dict[str, Any]:
    """Load an engine folder (images/ + labels/ + provenance sidecars, e.g. napari's series
    annotator output) into `dataset`'s Detections `field`. Samples are matched by image file
    name; images the dataset lacks are added. Images without labels are counted, not touched.
    Raises ImageError for a folder without images/, ProvenanceError for a bad sidecar."""
    pairs = labelled_pairs(Path(folder))
    ids, paths = dataset.values("id"), dataset.values("filepath")
    by_name = {Path(p).name: i for i, p in zip(ids, paths, strict=True)}
    summary = {"imported": 0, "added_samples": 0, "objects": 0, "without_labels": 0}
    for image_path, label_path, _ in pairs:
        if label_path is None:
            summary["without_labels"] += 1
            continue
        labels = np.asarray(read_image(label_path))
        if labels.ndim != 2:
            raise ImageError(f"{label_path}: a label image must be 2-D, got {labels.shape}")
        detections = labels_to_detections(labels, label_records(label_path))
        sample_id = by_name.get(image_path.name)
        if sample_id is None:
            sample = fo.Sample(filepath=str(image_path.resolve()))
            sample[field] = detections
            dataset.add_sample(sample)
            summary["added_samples"] += 1
        else:
            sample = dataset[sample_id]
            sample[field] = detections
            sample.save()
        summary["imported"] += 1
        summary["objects"] += len(detections.detections)
    return {**summary, "field": field}


def import_labels_by_name(folder, name: str, field: str = "corrected") -> dict[str, Any]:
    """`import_labels` into the dataset `name`, made (persistent) if new."""
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
    else:
        dataset = fo.Dataset(name)
        dataset.persistent = True
    return import_labels(folder, dataset, field)


# ------------------------------------------------------------------------------ refine


def source_objects(value, hw: tuple[int, int]) -> tuple[dict[Any, np.ndarray], list[dict]]:
    """({id: (H, W) mask}, per-object review dicts) of a Detections value (each detection's
    mask, or its filled box; id = detection id) or a Segmentation value (each connected
    region of each nonzero class; id = "class:region")."""
    from scipy import ndimage

    objects: dict[Any, np.ndarray] = {}
    reviews: list[dict] = []
    if value is None:
        return objects, reviews
    if isinstance(value, fo.Detections):
        for detection in value.detections:
            objects[detection.id] = detection_to_mask(detection, hw)
            reviews.append({"class": detection.label})
        return objects, reviews
    if isinstance(value, fo.Segmentation):
        mask = np.asarray(value.get_mask())
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != tuple(hw):
            raise ImageError(f"segmentation of shape {mask.shape} on an image of {hw} pixels")
        for cls in (int(v) for v in np.unique(mask) if v != 0):
            parts, n = ndimage.label(mask == cls)
            for region in range(1, n + 1):
                objects[f"{cls}:{region}"] = parts == region
                reviews.append({"class": str(cls)})
        return objects, reviews
    raise EngineFieldError(f"can't refine a {type(value).__name__}; use Detections or Segmentation")


def refine_detections(
    session: Session, image, value, field: str, label: str | None = None
) -> fo.Detections:
    """SAM-refined masks of the objects of one sample's `value` (Detections or Segmentation
    of `field`) on `image` (`SessionImage`): each object's box + mask as prompts
    (`sam_core.refine.refine_instances`), stored with its provenance (kind "refined") and
    ``refined_from`` (the source detection id or "class:region")."""
    objects, reviews = source_objects(value, image.image_hw)
    if not objects:
        return fo.Detections(detections=[])
    result = refine_instances(session, image, objects, source={"field": field}, reviews=reviews)
    detections = []
    for mask, score, source_id, record in zip(
        result.masks, result.scores, result.labels, result.records, strict=True
    ):
        detection = mask_to_detection(
            mask,
            label or record.review.get("class") or "object",
            predicted_iou=float(score),
            refined_from=str(source_id),
            **{PROVENANCE_ATTRIBUTE: record.to_dict()},
        )
        if detection is not None:
            detections.append(detection)
    return fo.Detections(detections=detections)


def check_refine_field(collection, field: str) -> None:
    """EngineFieldError unless `field` is a Detections or Segmentation field."""
    _check_field(collection, field, (fo.Detections, fo.Segmentation))
