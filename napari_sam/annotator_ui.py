"""The annotator's controls (Qt widgets via qtpy), kept apart from its behaviour."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from sam_core import DEFAULT_MODEL, list_models

from .annotator_review import build_review_controls
from .prefill import build_prefill_controls

if TYPE_CHECKING:
    from .annotator import AnnotatorWidget


def build_controls(widget: AnnotatorWidget) -> None:
    """Create the widget's combos, spin boxes, buttons, labels and progress bar as attributes
    (image_combo, model_combo, channel_spin, labels_combo, overwrite_check, min_iou_spin,
    max_slices_spin, buttons, mode_label, mask_label, status_label, progress)."""
    form = QFormLayout()
    widget.image_combo = QComboBox()
    widget.image_combo.currentTextChanged.connect(widget._on_image_changed)
    widget.model_combo = QComboBox()
    widget.model_combo.setEditable(True)  # a checkpoint path may be typed in
    widget.model_combo.addItems([m.name for m in list_models()])
    widget.model_combo.setCurrentText(DEFAULT_MODEL)
    widget.channel_spin = QSpinBox()
    widget.channel_spin.setRange(-1, 63)
    widget.channel_spin.setSpecialValueText("auto")
    widget.channel_spin.setValue(-1)
    widget.channel_spin.valueChanged.connect(lambda _: widget._on_image_changed())
    widget.labels_combo = QComboBox()
    widget.overwrite_check = QCheckBox("overwrite existing objects")
    widget.min_iou_spin = QDoubleSpinBox()
    widget.min_iou_spin.setRange(0.0, 1.0)
    widget.min_iou_spin.setSingleStep(0.05)
    widget.min_iou_spin.setValue(0.5)
    widget.max_slices_spin = QSpinBox()
    widget.max_slices_spin.setRange(0, 10000)
    widget.max_slices_spin.setSpecialValueText("all")
    form.addRow("image", widget.image_combo)
    form.addRow("model", widget.model_combo)
    form.addRow("channel", widget.channel_spin)
    form.addRow("target labels", widget.labels_combo)
    widget.cache_edit = QLineEdit()
    widget.cache_edit.setPlaceholderText("optional folder: keep embeddings on disk (zarr)")
    form.addRow("cache folder", widget.cache_edit)
    form.addRow(widget.overwrite_check)
    form.addRow("propagation min IoU", widget.min_iou_spin)
    form.addRow("propagation max slices", widget.max_slices_spin)

    buttons = [
        ("Compute embedding", widget.compute_embedding),
        ("Segment [S]", widget.segment),
        ("Next mask [N]", widget.next_mask),
        ("Commit [C]", widget.commit),
        ("Undo [U]", widget.undo),
        ("Clear [X]", widget.clear_prompts),
        ("Propagate", widget.propagate),
        ("Cancel", widget.cancel),
    ]
    widget.buttons: dict[str, QPushButton] = {}
    rows = QVBoxLayout()
    for i in range(0, len(buttons), 2):
        row = QHBoxLayout()
        for text, slot in buttons[i : i + 2]:
            button = QPushButton(text)
            if text != "Cancel":  # re-creates deleted helper layers, shows errors as messages
                slot = widget._guarded(slot)
            button.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(button)
            widget.buttons[text.split(" [")[0]] = button
        rows.addLayout(row)
    widget.mode_label = QLabel()
    widget.mask_label = QLabel("no preview")
    widget.status_label = QLabel("pick an image and click on an object")
    widget.status_label.setWordWrap(True)
    widget.progress = QProgressBar()
    widget.progress.setVisible(False)
    layout = QVBoxLayout(widget)
    layout.addLayout(form)
    layout.addLayout(rows)
    for child in (widget.mode_label, widget.mask_label, widget.progress, widget.status_label):
        layout.addWidget(child)
    layout.addWidget(build_prefill_controls(widget))
    layout.addWidget(build_review_controls(widget))
    layout.addStretch(1)
