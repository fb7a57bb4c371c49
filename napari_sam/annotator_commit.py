"""The annotator's commit (C) and undo (U): write the previewed object into a Labels layer,
with its provenance record in the layer's metadata (`layer_provenance`); undo puts the previous
records back. Undo items are (labels layer, CommitRecord, records before the commit)."""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info

from sam_core.errors import SamscopeError

from . import layer_provenance
from .annotation import commit_object, undo_commit
from .annotator_layers import NEW_LABELS, POINTS


class CommitMixin:
    """target_labels / commit / undo for `AnnotatorWidget` (uses its state)."""

    def target_labels(self) -> napari.layers.Labels:
        """The Labels layer C writes to: the chosen one, or a new `SAM objects` layer placed
        like the image (also when the user deleted the previous target). Raises SamscopeError
        for a chosen layer of another shape."""
        layout = self.image_layout()
        name = self.labels_combo.currentText()
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if tuple(layer.data.shape) != layout.labels_shape:
                raise SamscopeError(
                    f"labels layer {name!r} has shape {tuple(layer.data.shape)} but the image "
                    f"needs {layout.labels_shape}; choose another target or '<new: {NEW_LABELS}>'"
                )
            return layer
        layer = self.viewer.add_labels(
            np.zeros(layout.labels_shape, np.uint32), name=NEW_LABELS, **self._helper_kwargs()
        )
        self.labels_combo.setCurrentText(layer.name)
        return layer

    def commit(self) -> None:
        """C: write the previewed object into the target labels as a new id."""
        if self._preview_worker is not None or self._preview_pending:
            self._commit_pending = True  # commit as soon as the preview is up to date
            return
        if not self.object_masks:
            show_error("nothing to commit: add points or a box first")
            return
        try:
            labels = self.target_labels()
            provenance = self._commit_provenance()
            before = layer_provenance.snapshot(labels)
            record = commit_object(labels.data, self.object_masks, self.overwrite_check.isChecked())
        except SamscopeError as exc:
            show_error(str(exc))
            return
        self._store_provenance(labels, record, provenance)
        self.undo_stack.push((labels, record, before))
        labels.refresh()
        self.clear_prompts()
        if self.helper(POINTS) is not None:  # keep clicking: new labels layers become active
            self.viewer.layers.selection.active = self.helper(POINTS)
        self._set_status(
            f"committed object {record.label_id} ({record.n_pixels} px) to {labels.name!r}"
        )

    def undo(self) -> None:
        """U: take back the last commit."""
        item = self.undo_stack.pop()
        if item is None:
            show_info("nothing to undo")
            return
        labels, record, provenance_before = item
        if labels not in self.viewer.layers:
            show_error(f"can't undo: the labels layer {labels.name!r} was removed")
            return
        undo_commit(labels.data, record)
        layer_provenance.restore(labels, provenance_before)
        labels.refresh()
        self._provenance_changed(labels)
        self._set_status(f"undid object {record.label_id}")
