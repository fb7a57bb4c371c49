"""How each object the annotator commits was made: its `MaskProvenance` record.

The preview worker builds the record with the mask (`prompted_record`, model thread: it
digests the plane); the commit adjusts it to the mask actually chosen (N may have moved the
choice; propagation adds the slices) and stores it in the target layer's metadata
(`layer_provenance`). Nothing here touches Qt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sam_core.provenance import MaskProvenance, mask_summary, prompted_provenance

from . import layer_provenance
from .image_source import session_image
from .prompts import SlicePrompts


def image_path_of(layer: Any) -> str | None:
    """The file an image layer shows (series widget metadata, else napari's source)."""
    if layer is None:
        return None
    path = layer.metadata.get(layer_provenance.IMAGE_PATH_KEY)
    if path is None:
        path = getattr(getattr(layer, "source", None), "path", None)
    return None if path is None else str(path)


def prompted_record(
    session: Any,
    data: object,
    rgb: bool,
    channel: int | None,
    z: int | None,
    prompts: SlicePrompts,
    masks: np.ndarray,
    choice: int,
    image_path: str | None,
) -> MaskProvenance:
    """The record of candidate `choice` of `masks` ((M, H, W) bool) for `prompts` on plane `z`
    of the layer data (call in a worker: it digests the plane)."""
    has_points = len(prompts.points_xy) > 0
    return prompted_provenance(
        session,
        session_image(data, rgb, channel),
        z=z,
        points_xy=prompts.points_xy if has_points else None,
        point_labels=prompts.labels if has_points else None,
        box_xyxy=prompts.box_xyxy,
        mask_input=None,
        multimask_output=prompts.ambiguous,
        mask_index=choice,
        mask=masks[choice],
        image_path=image_path,
    )


def committed_record(
    record: MaskProvenance,
    choice: int,
    mask: np.ndarray,
    object_slices: list[int | None],
    propagation: dict | None = None,
) -> MaskProvenance:
    """`record` for the mask shown at commit time: candidate `choice` ((H, W) `mask`), and,
    for an object propagated through a stack, the slices it covers."""
    parameters = {**record.parameters, "mask_index": int(choice)}
    slices = [z for z in object_slices if z is not None]
    if len(slices) > 1:
        parameters["propagation"] = {**(propagation or {}), "slices": sorted(slices)}
    return dataclasses.replace(record, parameters=parameters, output=mask_summary(mask))


class ProvenanceMixin:
    """Keeps the target layer's records in step with commits, undo and deletions."""

    def _commit_provenance(self) -> MaskProvenance | None:
        """The record of the object about to be committed (None without a preview record)."""
        c = self.candidates
        record = getattr(c, "record", None) if c is not None else None
        if record is None:
            return None
        propagation = {
            "min_iou": float(self.min_iou_spin.value()),
            "max_slices": int(self.max_slices_spin.value()) or None,
            "start_z": c.z,
        }
        return committed_record(
            record, c.choice, c.masks[c.choice], list(self.object_masks), propagation
        )

    def _store_provenance(self, labels: Any, commit: Any, record: MaskProvenance | None) -> None:
        """After `commit_object`: add the new object's record, drop those of objects the
        commit erased entirely (overwrite)."""
        if record is not None:
            layer_provenance.set_record(labels, commit.label_id, record)
        previous = set()
        for _, old in commit.changes.values():
            previous.update(int(v) for v in np.unique(old) if v)
        layer_provenance.drop_missing(labels, previous - {commit.label_id})
        self._provenance_changed(labels)

    def _provenance_changed(self, labels: Any) -> None:
        """Hook: the review panel redraws its table (see `annotator_review`)."""
        refresh = getattr(self, "refresh_review", None)
        if refresh is not None:
            refresh()
