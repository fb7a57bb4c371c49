"""Running the core session over FiftyOne samples: the sample's image as the session reads it,
prompted masks for one image, and the loop that skips finished samples and reports failures.

Every way into the plugin (the operators, `SamscopeModel` for ``apply_model``) reads a sample
with `sample_image` and segments it with `prompted_detections` or
`samscope_fiftyone.automatic.automatic_detections`, so they give the same masks for the same
sample. Reading, normalising, embedding (and its cache), tiling and the prompt rules are
`sam_core.session`'s; this module only converts between FiftyOne labels and the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import fiftyone as fo
import numpy as np

from sam_core import ImageError
from sam_core.image_input import Normalization
from sam_core.provenance import predict_best_recorded
from sam_core.session import Channels, Session, SessionImage

from .conversion import DISK_MASK_PIXELS, crop_to_box, local_mask_to_detection
from .prompts import ObjectPrompt, prompts_from_label

Progress = Callable[[int, int], None]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


def checked_normalization(name: str) -> Normalization:
    """`name` if it is one of `NORMALIZATIONS`, else ImageError naming the choices."""
    if name not in NORMALIZATIONS:
        raise ImageError(f"normalization must be one of {NORMALIZATIONS}, got {name!r}")
    return name  # type: ignore[return-value]


def sample_filepath(sample: Any) -> str | None:
    """The media file of a FiftyOne sample, or None (a video frame, no sample, no file)."""
    if sample is None or isinstance(sample, fo.Frame):
        return None
    try:
        return sample.filepath or None
    except (AttributeError, KeyError):
        return None


def sample_image(
    session: Session,
    sample: Any,
    array: np.ndarray | None = None,
    channels: Channels = None,
    normalization: Normalization = "auto",
) -> SessionImage:
    """The image of `sample` as the session reads it: its file at full bit depth, EXIF
    orientation applied, axes interpreted once (`Session.load`).

    array: the pixels to use when there is no file to read (a video frame FiftyOne decoded,
    or `SamscopeModel.predict` called without a sample); ignored when the sample has a file,
    because FiftyOne's own decoding is 8-bit.
    Raises:
        ImageError: unreadable/missing file, unusable axes or channel choice, no image at all.
    """
    filepath = sample_filepath(sample)
    if filepath is not None:
        return session.load(filepath, channels=channels, normalization=normalization)
    if array is None:
        raise ImageError("no image: the sample has no file and no pixels were given")
    return session.load(np.asarray(array), channels=channels, normalization=normalization)


def _prompt_detection(
    session: Session, image: SessionImage, embedding, prompt: ObjectPrompt, **kwargs
):
    """One prompt → one `fo.Detection` (or None for an empty mask), the full-size mask cut to
    its box at once, with its provenance record (``samscope_provenance``, a dict of schema
    `sam_core.provenance`). The ambiguity rule (one click: best of 3) is the session's."""
    points = prompt.points_xy if len(prompt.points_xy) else None
    labels = prompt.point_labels if points is not None else None
    mask, score, record = predict_best_recorded(
        session, image, embedding, points, labels, prompt.box_xyxy
    )
    cropped = crop_to_box(mask)
    del mask
    if cropped is None:
        return None
    extra: dict[str, Any] = {
        "predicted_iou": score,
        "prompt_type": prompt.kind,
        "samscope_provenance": record.to_dict(),
    }
    if prompt.box_xyxy is not None:
        extra["prompt_box"] = [float(v) for v in prompt.box_xyxy]
    else:
        extra["prompt_points"] = prompt.points_xy.astype(float).tolist()
        extra["prompt_labels"] = prompt.point_labels.astype(int).tolist()
    if prompt.source_id is not None:
        extra["prompt_id"] = prompt.source_id
    local, (x0, y0, _, _) = cropped
    return local_mask_to_detection(local, (x0, y0), image.image_hw, prompt.label, **kwargs, **extra)


def prompted_detections(
    session: Session,
    image: SessionImage,
    prompt_label: fo.Label | None,
    mask_dir: str | None = None,
    stem: str = "mask",
    disk_mask_pixels: int = DISK_MASK_PIXELS,
) -> fo.Detections:
    """One mask per prompt of `prompt_label` (a sample's Detections or Keypoints value, relative
    coordinates of the image as displayed) on `image`, as `fo.Detections`.

    Each detection has the prompt's label, ``predicted_iou`` (and ``confidence``), the prompt
    that made it (``prompt_box`` xyxy px, or ``prompt_points`` [[x, y]] px + ``prompt_labels``)
    and ``prompt_id``, and ``samscope_provenance`` (how it was made). Masks with more than
    `disk_mask_pixels` box pixels go to ``<mask_dir>/<stem>_<i>.png`` (if mask_dir).
    Raises PromptError for bad prompts.
    """
    height, width = image.image_hw
    prompts = prompts_from_label(prompt_label, width, height)
    detections = []
    if prompts:
        embedding = session.embed(image)
        for index, prompt in enumerate(prompts):
            mask_file = None if mask_dir is None else f"{mask_dir}/{stem}_{index:04d}.png"
            detection = _prompt_detection(
                session,
                image,
                embedding,
                prompt,
                mask_file=mask_file,
                disk_mask_pixels=disk_mask_pixels,
            )
            if detection is not None:
                detections.append(detection)
    return fo.Detections(detections=detections)


@dataclass
class RunSummary:
    """What a run over a view did: counts, masks written and per-sample failures."""

    processed: int = 0
    skipped: int = 0
    masks: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "masks": self.masks,
            "failed": len(self.failures),
            "failures": self.failures,
        }


def run_over_view(
    view: fo.core.collections.SampleCollection,
    label_field: str,
    make_labels: Callable[[fo.Sample], fo.Detections],
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Call ``make_labels(sample)`` for every sample of `view` and save the result in
    `label_field`. Samples whose field is already set are skipped unless `overwrite`. A sample
    that fails (missing/unreadable file, bad prompt) is recorded in the summary and the others
    go on. progress(done, total) is called after each sample.
    """
    summary = RunSummary()
    total = len(view)
    has_field = label_field in view.get_field_schema()
    for done, sample in enumerate(view.iter_samples(autosave=False), start=1):
        if not overwrite and has_field and sample[label_field] is not None:
            summary.skipped += 1
        else:
            try:
                labels = make_labels(sample)
            except Exception as error:  # reported per sample; the rest of the view goes on
                summary.failures.append(
                    {"id": sample.id, "filepath": sample.filepath, "error": str(error)}
                )
            else:
                sample[label_field] = labels
                sample.save()
                summary.processed += 1
                summary.masks += len(labels.detections)
        if progress is not None:
            progress(done, total)
    return summary
