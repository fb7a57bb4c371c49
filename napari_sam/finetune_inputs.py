"""Layers → training samples for the Fine-tune widget, and the widget's messages.

Everything here runs without Qt: checks of the image/Labels pair (one clear `ImageError` per
problem), the copy of each labelled plane, the validation split, the output-folder check and
the lines shown to the user.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np

from sam_core.errors import ImageError, OutputError
from sam_core.evaluation.datasets import Sample, check_has_objects, check_label_image
from sam_core.label_check import BinaryLabelsError, check_instance_labels

from .image_source import image_plane, layout_of


@dataclass(frozen=True)
class LabelledPlanes:
    """What Start takes from the layers (GUI thread): the image data (read in the worker,
    never written), copies of the labelled planes' instance ids (z None: a 2-D image) and
    notes for the log (e.g. a binary plane split into objects)."""

    image_name: str
    data: object
    rgb: bool
    channel: int | None
    planes: tuple[tuple[int | None, np.ndarray], ...]
    notes: tuple[str, ...] = ()  # what was done to the labels (binary planes split)

    def samples(self) -> list[Sample]:
        """One Sample per labelled plane (reads the image planes: call from a worker)."""
        return [
            Sample(
                self.image_name if z is None else f"{self.image_name}[z={z}]",
                image_plane(self.data, self.rgb, z, self.channel),
                label_image=label,
            )
            for z, label in self.planes
        ]


SPLIT_CHECKBOX = "split binary labels into objects (one per connected region)"
SPLIT_FIX = (
    f"tick '{SPLIT_CHECKBOX}' to make each separate blob one object (blobs that touch stay merged)"
)


def labelled_planes(
    image: napari.layers.Image | None,
    labels: napari.layers.Labels | None,
    channel: int | None,
    split_binary: bool = False,
) -> LabelledPlanes:
    """Check the pair and copy the labels of every plane that holds an object.

    split_binary: a plane whose separate blobs all have one label value becomes one object
    per connected region (in the copy; the layer is never changed), with a note.
    Raises ImageError with a message for the user: no layer, shapes that differ, no object,
    a binary plane of many blobs without `split_binary` (`sam_core.label_check`'s rule).
    """
    if image is None:
        raise ImageError("no image layer: open or add the image you annotated first")
    if labels is None:
        raise ImageError(
            "no labels layer: commit objects with the Segment Anything widget (or paint them "
            "in a Labels layer) first"
        )
    if getattr(image, "multiscale", False):
        raise ImageError(f"image {image.name!r} is multiscale; fine-tuning needs a plain array")
    layout = layout_of(image.data.shape, image.rgb, channel)
    if tuple(labels.data.shape) != layout.labels_shape:
        axes = "H, W" if layout.n_slices is None else "Z, H, W"
        raise ImageError(
            f"labels {labels.name!r} have shape {tuple(labels.data.shape)} but image "
            f"{image.name!r} needs labels of shape {layout.labels_shape} ({axes}): choose the "
            "Labels layer drawn on this image"
        )
    planes, notes = [], []
    for z in [None] if layout.n_slices is None else range(layout.n_slices):
        label = np.array(labels.data if z is None else labels.data[z])  # a copy
        if not label.any():
            continue
        where = f"labels {labels.name!r}" + ("" if z is None else f", slice {z}")
        label = check_label_image(label, layout.spatial_hw, where)
        check_has_objects(label, where)
        try:
            label = check_instance_labels(label, where, split_binary, notes.append)
        except BinaryLabelsError as exc:
            raise exc.with_fix(SPLIT_FIX) from None
        planes.append((z, label))
    if not planes:
        raise ImageError(
            f"labels {labels.name!r} have no objects: commit some with the Segment Anything "
            "widget (or paint them) before fine-tuning"
        )
    return LabelledPlanes(image.name, image.data, image.rgb, channel, tuple(planes), tuple(notes))


def validation_count(n_samples: int, requested: int | None) -> int:
    """How many samples to hold out: `requested`, or None for 20 % (at least 1); 0 with one
    sample. Raises ImageError when it leaves nothing to train on."""
    if n_samples < 2:
        return 0
    count = max(1, n_samples // 5) if requested is None else requested
    if count >= n_samples:
        raise ImageError(
            f"cannot hold out {count} of {n_samples} labelled images for validation: at most "
            f"{n_samples - 1}"
        )
    return count


def split_note(n_train: int, n_val: int) -> str:
    images = f"{n_train} labelled image{'s' if n_train > 1 else ''}"
    if n_val:
        return f"{images} for training, {n_val} held out for validation"
    if n_train == 1:
        return "1 labelled image: training without validation (no before/after mIoU)"
    return f"{images}, none held out: training without validation"


def writable_folder(text: str) -> Path:
    """The output folder, created if needed; OutputError if it can't be written to."""
    if not text.strip():
        raise OutputError("choose an output folder for the fine-tuned weights")
    folder = Path(text.strip()).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}; choose another"
        ) from exc
    return folder


def cancel_message(step: int | None, total: int, epochs: int, at_epoch_end: bool, out) -> str:
    """What a cancelled run left in `out` (finetune saves after each epoch)."""
    if step is None:
        return f"cancelled before the first training step; nothing new was written to {out}"
    per_epoch = max(1, total // max(epochs, 1))
    saved = step // per_epoch if at_epoch_end else (step - 1) // per_epoch
    if saved == 0:
        return f"cancelled after step {step} of {total}, before epoch 1 was saved"
    return (
        f"cancelled after step {step} of {total}; {saved} epoch(s) are saved in {out}: resume "
        f"with the same folder (Resume ticked, same settings) to continue from epoch {saved + 1}"
    )


def miou_summary(card: dict) -> str:
    """Before/after validation 1-point mIoU from a finetune card, as one line."""
    history = card.get("history") or []
    if not history:
        return "no epoch was trained: the folder's run already has them all (raise epochs)"
    epochs = f"{len(history)} epoch{'s' if len(history) > 1 else ''}"
    n_val = len(card.get("data", {}).get("val_images", []))
    before, after = card.get("baseline_val_miou"), history[-1]["val_miou"]
    if not n_val or after is None or math.isnan(after):
        return f"trained {epochs}; no validation images, so no mIoU"
    before_text = "?" if before is None or math.isnan(before) else f"{before:.3f}"
    return (
        f"validation 1-point mIoU: {before_text} before → {after:.3f} after {epochs} "
        f"({n_val} held-out image{'s' if n_val > 1 else ''})"
    )


def decoder_summary(entry: dict) -> str:
    """One line on an instance-decoder run from its model.json entry (`train_decoder`)."""
    history = entry.get("history") or []
    if not history:
        return "no epoch was trained: the folder's run already has them all (raise epochs)"
    epochs = f"{len(history)} epoch{'s' if len(history) > 1 else ''}"
    scores = [h.get("val_AP50") for h in history]
    if all(v is None or math.isnan(v) for v in scores):
        return f"instance decoder trained for {epochs}; no validation images, so no AP50"
    best = entry.get("best_epoch") or len(history)
    found = history[best - 1]
    return (
        f"instance decoder: validation AP50 {found['val_AP50']:.3f}, AP {found['val_AP']:.3f}, "
        f"mSA {found['val_mSA']:.3f} (best of {epochs}: epoch {best})"
    )
