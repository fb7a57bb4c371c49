"""Per-object review in the annotator: a class and flags for each committed object.

The object is the target Labels layer's selected label (napari's label picker, or a click on
a row of the table). Apply stores the class (free text, or one of the classes already used)
and the flags (unclear boundary, uncertain, reviewed) in the object's provenance ``review``
(`MaskProvenance.with_review`; an object painted by hand gets a "manual" record first). The
table lists every object's id, kind, class and flags; the same columns are the layer's
``features`` (napari shows them under the cursor). Delete object removes the selected object
and its record as one undo step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from sam_core.provenance import FLAGS, manual_provenance

from . import layer_provenance
from .annotation import CommitRecord
from .annotator_layers import layer_key

if TYPE_CHECKING:
    from .annotator import AnnotatorWidget

COLUMNS = ("id", "kind", "class", "flags")


def build_review_controls(widget: AnnotatorWidget) -> QGroupBox:
    """The "Review" group: selected object, class, flags, Apply / Delete, the objects table."""
    box = QGroupBox("Review objects")
    form = QFormLayout(box)
    widget.review_label = QLabel("no object selected")
    widget.class_combo = QComboBox()
    widget.class_combo.setEditable(True)
    widget.class_combo.setPlaceholderText("class (type or pick)")
    widget.flag_checks = {flag: QCheckBox(flag.replace("-", " ")) for flag in FLAGS}
    flags = QHBoxLayout()
    for check in widget.flag_checks.values():
        flags.addWidget(check)
    row = QHBoxLayout()
    for text, slot in (
        ("Apply to object", widget.apply_review),
        ("Delete object", widget.delete_object),
    ):
        button = QPushButton(text)
        guarded = widget._guarded(slot)
        button.clicked.connect(lambda _=False, s=guarded: s())
        row.addWidget(button)
        widget.buttons[text] = button
    widget.review_table = QTableWidget(0, len(COLUMNS))
    widget.review_table.setHorizontalHeaderLabels(list(COLUMNS))
    widget.review_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    widget.review_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    widget.review_table.setMaximumHeight(160)
    widget.review_table.verticalHeader().setVisible(False)
    widget.review_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    widget.review_table.cellClicked.connect(lambda row, _col: widget._on_review_row(row))
    form.addRow(widget.review_label)
    form.addRow("class", widget.class_combo)
    form.addRow(flags)
    form.addRow(row)
    form.addRow(widget.review_table)
    widget.labels_combo.currentTextChanged.connect(lambda _: widget.refresh_review())
    widget._review_watched: set[int] = set()
    return box


class ReviewMixin:
    """apply_review / delete_object / refresh_review for `AnnotatorWidget`."""

    def review_layer(self) -> Any | None:
        """The target Labels layer when it exists (review never creates one)."""
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def selected_object(self) -> tuple[Any, int]:
        """(target layer, selected label id present in it); SamscopeError otherwise."""
        from sam_core.errors import SamscopeError

        layer = self.review_layer()
        if layer is None:
            raise SamscopeError("no target labels yet: commit an object first")
        label_id = int(layer.selected_label)
        if label_id == 0 or not np.any(np.asarray(layer.data) == label_id):
            raise SamscopeError(
                f"label {label_id} is not an object of {layer.name!r}: pick one with the "
                "label picker or click its row in the table"
            )
        return layer, label_id

    def apply_review(self) -> None:
        """Store the class and flags in the selected object's provenance."""
        layer, label_id = self.selected_object()
        record = layer_provenance.record_of(layer, label_id)
        if record is None:  # painted by hand: it gets a "manual" record
            z = self.current_z()
            plane = np.asarray(layer.data if z is None else layer.data[z])
            record = manual_provenance(plane == label_id, z=z, tool="napari")
        label_class = self.class_combo.currentText().strip() or None
        flags = [flag for flag, check in self.flag_checks.items() if check.isChecked()]
        layer_provenance.set_record(
            layer, label_id, record.with_review(class_=label_class, flags=flags)
        )
        if label_class and self.class_combo.findText(label_class) < 0:
            self.class_combo.addItem(label_class)
        self.refresh_review()
        self._set_status(f"object {label_id}: class {label_class or '—'}, flags {flags or '—'}")

    def delete_object(self) -> None:
        """Remove the selected object and its record (U brings both back)."""
        layer, label_id = self.selected_object()
        before = layer_provenance.snapshot(layer)
        data = np.asarray(layer.data)
        record = CommitRecord(label_id)
        planes = [None] if data.ndim == 2 else range(data.shape[0])
        for z in planes:
            plane = data if z is None else data[z]
            flat = np.flatnonzero(plane == label_id)
            if flat.size:
                record.changes[z] = (flat, np.full(flat.size, label_id, dtype=data.dtype))
                rows, cols = np.unravel_index(flat, plane.shape)
                plane[rows, cols] = 0
        layer_provenance.records(layer).pop(label_id, None)
        self.undo_stack.push((layer, record, before))
        layer.refresh()
        self.refresh_review()
        self._set_status(f"deleted object {label_id} ({record.n_pixels} px); U brings it back")

    # ------------------------------------------------------------------------- display
    def refresh_review(self) -> None:
        """Redraw the table and the layer's features from the target layer's records."""
        if not getattr(self, "_alive", False):
            return
        layer = self.review_layer()
        table = self.review_table
        if layer is None:
            table.setRowCount(0)
            self.review_label.setText("no object selected")
            return
        self._watch_selection(layer)
        layer_provenance.prune(layer)
        ids = [int(i) for i in np.unique(np.asarray(layer.data)) if i]
        held = layer_provenance.records(layer)
        rows = [_row(i, held.get(i)) for i in ids]
        table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                table.setItem(r, c, QTableWidgetItem(value))
        _set_features(layer, rows)
        self._show_review_of(int(layer.selected_label))

    def _watch_selection(self, layer: Any) -> None:
        if layer_key(layer) not in self._review_watched:
            self._review_watched.add(layer_key(layer))
            layer.events.selected_label.connect(
                lambda event=None, ly=layer: self._on_selected_label(ly)
            )

    def _on_selected_label(self, layer: Any) -> None:
        if getattr(self, "_alive", False) and self.review_layer() is layer:
            self._show_review_of(int(layer.selected_label))

    def _on_review_row(self, row: int) -> None:
        layer = self.review_layer()
        item = self.review_table.item(row, 0)
        if layer is not None and item is not None:
            layer.selected_label = int(item.text())
            self._show_review_of(int(item.text()))

    def _show_review_of(self, label_id: int) -> None:
        layer = self.review_layer()
        held = layer_provenance.records(layer).get(label_id) if layer is not None else None
        review = (held or {}).get("review") or {}
        kind = (held or {}).get("kind", "no record")
        self.review_label.setText(f"selected object: {label_id} ({kind})")
        self.class_combo.setCurrentText(review.get("class") or "")
        for flag, check in self.flag_checks.items():
            check.setChecked(flag in (review.get("flags") or []))


def _row(label_id: int, record: dict | None) -> tuple[str, str, str, str]:
    review = (record or {}).get("review") or {}
    return (
        str(label_id),
        (record or {}).get("kind", "—"),
        review.get("class") or "",
        ", ".join(review.get("flags") or []),
    )


def _set_features(layer: Any, rows: list[tuple[str, str, str, str]]) -> None:
    """The table as the layer's features (one row per label id, napari's "index" column)."""
    import pandas as pd

    columns = {
        "index": [int(r[0]) for r in rows],
        "kind": [r[1] for r in rows],
        "class": [r[2] for r in rows],
        "flags": [r[3] for r in rows],
    }
    layer.features = pd.DataFrame(columns)
