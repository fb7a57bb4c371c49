"""The annotator's semi-automatic stage (the paper's §4 data engine, stage 2).

* Pre-fill: the confident automatic masks of the image (or current slice) become committed
  objects of the target labels, each with its provenance (kind "automatic"): the user deletes
  or corrects what is wrong, then clicks what is missing. "Confident" is the predicted-IoU
  threshold chosen in the widget (stability as resolved by core). Mode "grid" is the paper's
  point-grid generator; "decoder" / "decoder+prompts" use a trained instance decoder listed
  in the model's ``model.json`` (`Session.instance_segment`; a clear error without one).
* Refine existing labels: each object of another Labels layer (Cellpose, a threshold, an older
  model; a binary layer is split into connected regions, with a notice) is given to SAM as
  its box + mask prompts (`sam_core.refine.refine_instances`) and the refined mask committed
  with provenance (kind "refined"); the source layer is only read.

Both write only free pixels (existing objects stay), as one undo step (U takes the whole
pre-fill back). Model work runs in a job on samscope's pool (`jobs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
)

from sam_core.automatic_settings import automatic_settings
from sam_core.errors import PromptError, SamscopeError
from sam_core.instance import MODES as INSTANCE_MODES
from sam_core.label_check import check_instance_labels
from sam_core.provenance import automatic_provenance
from sam_core.refine import refine_instances

from . import jobs, layer_provenance
from .annotation import CommitRecord, commit_object
from .annotator_layers import PREVIEW, layer_key
from .annotator_provenance import image_path_of
from .image_source import session_image

if TYPE_CHECKING:
    from .annotator import AnnotatorWidget

DEFAULT_PREFILL_IOU = 0.92  # stricter than the official 0.88: pre-filled masks should be right
DEFAULT_PREFILL_GRID = 16  # points per side: 256 prompts
CANCELLED = "cancelled by the user"


class _Cancelled(SamscopeError):
    """Raised from a progress callback when Cancel was pressed."""


def build_prefill_controls(widget: AnnotatorWidget) -> QGroupBox:
    """The "Semi-automatic" group: threshold, grid, mode, Pre-fill; source layer, Refine."""
    box = QGroupBox("Semi-automatic")
    form = QFormLayout(box)
    widget.prefill_iou_spin = QDoubleSpinBox()
    widget.prefill_iou_spin.setRange(0.0, 1.0)
    widget.prefill_iou_spin.setSingleStep(0.01)
    widget.prefill_iou_spin.setValue(DEFAULT_PREFILL_IOU)
    widget.prefill_grid_spin = QSpinBox()
    widget.prefill_grid_spin.setRange(4, 64)
    widget.prefill_grid_spin.setValue(DEFAULT_PREFILL_GRID)
    widget.prefill_mode_combo = QComboBox()
    widget.prefill_mode_combo.addItems(["grid", *INSTANCE_MODES])  # decoders: see sam_core.instance
    widget.refine_combo = QComboBox()
    form.addRow("pre-fill: min predicted IoU", widget.prefill_iou_spin)
    form.addRow("pre-fill: points per side", widget.prefill_grid_spin)
    form.addRow("pre-fill: mode", widget.prefill_mode_combo)
    form.addRow("refine labels from", widget.refine_combo)
    row = QHBoxLayout()
    for text, slot in (("Pre-fill", widget.prefill), ("Refine labels", widget.refine_labels)):
        button = QPushButton(text)
        guarded = widget._guarded(slot)
        button.clicked.connect(lambda _=False, s=guarded: s())
        row.addWidget(button)
        widget.buttons[text] = button
    form.addRow(row)
    for event in (widget.viewer.layers.events.inserted, widget.viewer.layers.events.removed):
        event.connect(widget._refresh_refine_choices)
    widget._refresh_refine_choices()
    return box


class PrefillMixin:
    """prefill / refine_labels for `AnnotatorWidget` (uses its state and commit helpers)."""

    def _refresh_refine_choices(self, event: object = None) -> None:
        if not getattr(self, "_alive", False) and event is not None:
            return
        names = [
            ly.name
            for ly in self.viewer.layers
            if isinstance(ly, napari.layers.Labels) and ly.name != PREVIEW
        ]
        current = self.refine_combo.currentText()
        self.refine_combo.blockSignals(True)
        self.refine_combo.clear()
        self.refine_combo.addItems(names)
        others = [n for n in names if n != self.labels_combo.currentText()]
        if current in names:
            self.refine_combo.setCurrentText(current)
        elif others:  # the target labels are the last thing to refine from
            self.refine_combo.setCurrentText(others[0])
        self.refine_combo.blockSignals(False)

    def _start_semiauto(self, work, on_done, what: str) -> None:
        if self._long_worker is not None:
            show_error("another computation is running; wait or press Cancel")
            return
        self._busy(f"{what}… (Cancel stops it)")
        self._long_worker = jobs.start_function_job(work, on_done, what)

    def _check_cancel(self, done: int = 0, total: int = 0) -> None:
        """Progress callback of a running pre-fill / refine (worker thread): Cancel asked the
        worker to quit, so stop at this step."""
        worker = self._long_worker
        if worker is not None and worker.abort_requested:
            raise _Cancelled(CANCELLED)

    def _semiauto_result(self, result: object, what: str) -> bool:
        """True for a real result; a cancel is a status line, other failures a message."""
        self._long_worker = None
        if not self._alive:
            return False
        cancelled = isinstance(result, jobs.Failure) and result.message.endswith(CANCELLED)
        if result is None or cancelled:  # None: the worker was asked to quit
            self._idle(f"{what} cancelled: nothing committed")
            return False
        if not jobs.report(result):
            self._idle(f"{what} stopped")
            return False
        return True

    # ------------------------------------------------------------------------ pre-fill
    def prefill(self) -> None:
        """Commit the confident automatic masks of the image (or current slice)."""
        self.image_layout()  # no usable image: a message, no job
        model, data, rgb, channel = self._embedding_job_parts()
        z, image_path = self.current_z(), image_path_of(self.image_layer())
        given = {
            "points_per_side": self.prefill_grid_spin.value(),
            "pred_iou_thresh": self.prefill_iou_spin.value(),
        }
        mode = self.prefill_mode_combo.currentText()
        self.target_labels()  # a wrong target fails now, not after the model ran

        def work() -> tuple[int | None, list[np.ndarray], list]:
            session = self.session(model)
            image = session_image(data, rgb, channel)
            if mode == "grid":
                generator = session.automatic_generator(**given)
                records = session.generate(image, z, generator, self._check_cancel)
                settings = automatic_settings(given, model)
            else:  # a trained instance decoder (issue 15); its records score like the grid's
                _, records = session.instance_segment(
                    image, z, mode=mode, progress=self._check_cancel
                )
                records = [r for r in records if r["predicted_iou"] >= given["pred_iou_thresh"]]
                settings = {"min_predicted_iou": given["pred_iou_thresh"]}
            records.sort(key=lambda r: -float(r["predicted_iou"]))
            masks = [np.asarray(r["segmentation"], dtype=bool) for r in records]
            provenance = automatic_provenance(
                session, image, records, z=z, settings=settings, mode=mode,
                image_path=image_path, masks=masks,
            )  # fmt: skip
            return z, masks, provenance

        self._start_semiauto(work, self._on_prefilled, "pre-fill")

    def _on_prefilled(self, result: object) -> None:
        if not self._semiauto_result(result, "pre-fill"):
            return
        z, masks, provenance = result
        written, skipped = self._commit_many(z, masks, provenance)
        self._idle(
            f"pre-filled {written} objects above predicted IoU "
            f"{self.prefill_iou_spin.value():.2f}"
            + (f" ({skipped} lay on existing objects)" if skipped else "")
            + ": delete or correct them, then click what is missing"
        )

    # ---------------------------------------------------------------------- refine
    def refine_labels(self) -> None:
        """Refine each object of the chosen Labels layer with SAM (box + mask prompts)."""
        name = self.refine_combo.currentText()
        source = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if not isinstance(source, napari.layers.Labels):
            show_error("choose a Labels layer to refine (e.g. from Cellpose or a threshold)")
            return
        layout = self.image_layout()
        target = self.target_labels()
        if layer_key(target) == layer_key(source):
            show_error(
                f"{name!r} is also the target labels: choose another target (or "
                "'<new: SAM objects>') so the original stays untouched"
            )
            return
        if tuple(source.data.shape) != layout.labels_shape:
            show_error(
                f"labels {name!r} have shape {tuple(source.data.shape)}, the image needs "
                f"{layout.labels_shape}"
            )
            return
        z = self.current_z()
        plane = np.array(source.data if z is None else source.data[z])  # a copy: never written
        notes: list[str] = []
        objects = check_instance_labels(plane, f"labels {name!r}", split=True, warn=notes.append)
        for note in notes:
            show_info(note)
        if not np.any(objects):
            show_error(f"labels {name!r} hold no object{'' if z is None else f' on slice {z}'}")
            return
        model, data, rgb, channel = self._embedding_job_parts()
        image_path = image_path_of(self.image_layer())

        def work() -> tuple[int | None, list[np.ndarray], list]:
            session = self.session(model)
            image = session_image(data, rgb, channel)
            result = refine_instances(
                session, image, objects, z=z, source={"layer": name}, image_path=image_path,
                progress=self._check_cancel,
            )  # fmt: skip
            return z, list(result.masks), list(result.records)

        self._start_semiauto(work, self._on_refined, "refining labels")

    def _on_refined(self, result: object) -> None:
        if not self._semiauto_result(result, "refining"):
            return
        z, masks, provenance = result
        written, skipped = self._commit_many(z, masks, provenance)
        self._idle(
            f"refined {written} objects into {self.labels_combo.currentText()!r}"
            + (f" ({skipped} lay on existing objects)" if skipped else "")
        )

    # ----------------------------------------------------------------------- commit
    def _commit_many(self, z: int | None, masks: list[np.ndarray], provenance: list) -> tuple:
        """Commit masks (free pixels only) with their records as one undo step; returns
        (objects written, objects skipped because no free pixel was left)."""
        try:
            labels = self.target_labels()
        except SamscopeError as exc:
            show_error(str(exc))
            return 0, len(masks)
        before = layer_provenance.snapshot(labels)
        merged: CommitRecord | None = None
        skipped = 0
        for mask, record in zip(masks, provenance, strict=True):
            try:
                commit = commit_object(labels.data, {z: mask}, overwrite=False)
            except PromptError:
                skipped += 1
                continue
            layer_provenance.set_record(labels, commit.label_id, record)
            merged = _merge(merged, commit)
        if merged is not None:
            self.undo_stack.push((labels, merged, before))
            labels.refresh()
        self._provenance_changed(labels)
        written = len(masks) - skipped
        return written, skipped


def _merge(total: CommitRecord | None, one: CommitRecord) -> CommitRecord:
    """One undo record for several commits that wrote disjoint pixels."""
    if total is None:
        return CommitRecord(one.label_id, dict(one.changes))
    for index, (flat, previous) in one.changes.items():
        if index in total.changes:
            old_flat, old_previous = total.changes[index]
            flat, previous = (
                np.concatenate([old_flat, flat]),
                np.concatenate([old_previous, previous]),
            )
        total.changes[index] = (flat, previous)
    return total
