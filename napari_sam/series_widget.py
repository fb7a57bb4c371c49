"""The "Image series" dock widget: annotate a folder of images one after another.

Open an input folder (``images/`` with optional ``labels/`` to correct, e.g. the ``to_correct/``
folder of ``samscope export-reviewed``, or a plain folder of images) and an output folder.
Each image opens with its labels (the output's saved ones when you come back, else the input's)
and the "Segment Anything" annotator is pointed at them; Previous / Next / Next to do / the
jump list move on, saving the labels you changed (label TIFF + provenance sidecar, the image
copied along) as you go; Save marks an image done as it is. Progress ("n of N done") and the
image you were on are kept in the output folder (`sam_core.series`), so opening it again
resumes there. While you annotate, the next image is read and its embedding computed in a
background job (samscope's own pool, `jobs`) through the annotator's `Session`, so moving on
costs no encoder wait.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sam_core.errors import SamscopeError
from sam_core.image_io import read_image
from sam_core.series import Series
from sam_core.session import Session

from . import jobs, layer_provenance
from .image_source import layout_of, session_image
from .reader import read_layers

SERIES_LABELS = "series labels"  # the Labels layer of the image shown


def viewer_layers(path: Path, channel: int | None) -> tuple[list, int]:
    """(layer data as the samscope reader gives it, index of the layer to annotate): the image,
    or for multi-channel files (one layer per channel) the annotator's channel (else 0)."""
    layers = read_layers(str(path))
    return layers, _target_index(layers, channel)


def _names(layers: list) -> list[str]:
    name = layers[0][1].get("name")
    return name if isinstance(name, list) else [name]


def _target_index(layers: list, channel: int | None) -> int:
    names = _names(layers)
    return min(channel or 0, len(names) - 1) if len(names) > 1 else 0


def _target_plane(layers: list, target: int) -> tuple[np.ndarray, bool]:
    """(data, rgb) of the layer the annotator will segment (a channel split: that channel)."""
    data, meta, _ = layers[0]
    if isinstance(meta.get("name"), list):
        return np.take(data, target, axis=meta["channel_axis"]), False
    return data, bool(meta.get("rgb", False))


class SeriesWidget(QWidget):
    """Annotate a folder of images one after another; construct with the viewer."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.series: Series | None = None
        self.index: int | None = None
        self._layers: list[Any] = []  # image layer(s) + labels layer of the shown image
        self._opened: tuple[np.ndarray, str] | None = None  # labels + records when opened
        self._prefetch_worker = None
        self._prefetched: dict[int, list] = {}  # index → viewer layer data (read ahead)
        self._alive = True
        self.destroyed.connect(self._on_destroyed)
        self._build_ui()

    # ------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("folder with images/ (and labels/) or images")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("folder for labels/ + progress (resumes)")
        for label, edit in (("images from", self.input_edit), ("save to", self.output_edit)):
            row = QHBoxLayout()
            browse = QPushButton("…")
            browse.clicked.connect(lambda _=False, e=edit: self._browse(e))
            row.addWidget(edit)
            row.addWidget(browse)
            form.addRow(label, row)
        self.open_button = QPushButton("Open series")
        self.open_button.clicked.connect(lambda _=False: self.open_series())
        self.jump_combo = QComboBox()
        self.jump_combo.activated.connect(lambda i: self.go(i))
        form.addRow(self.open_button)
        form.addRow("image", self.jump_combo)
        self.buttons: dict[str, QPushButton] = {}
        nav = QHBoxLayout()
        for text, slot in (
            ("Previous", lambda: self.step(-1)),
            ("Next", lambda: self.step(1)),
            ("Next to do", self.next_to_do),
        ):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=slot: s())
            nav.addWidget(button)
            self.buttons[text] = button
        save_row = QHBoxLayout()
        for text, slot in (("Save", self.save), ("Save + next to do", self.save_and_next)):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=slot: s())
            save_row.addWidget(button)
            self.buttons[text] = button
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m done")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status_label = QLabel("choose an image folder and an output folder, then Open")
        self.status_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(nav)
        layout.addLayout(save_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self._enable_navigation(False)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder", edit.text())
        if folder:
            edit.setText(folder)

    def _enable_navigation(self, enabled: bool) -> None:
        for button in self.buttons.values():
            button.setEnabled(enabled)
        self.jump_combo.setEnabled(enabled)

    def _set_status(self, text: str) -> None:
        if self._alive:
            self.status_label.setText(text)

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False

    # ----------------------------------------------------------------------- the series
    def open_series(
        self, input_folder: str | None = None, output_folder: str | None = None
    ) -> None:
        """Open the folders (from the fields when not given) and go to where you stopped."""
        if input_folder is not None:
            self.input_edit.setText(str(input_folder))
        if output_folder is not None:
            self.output_edit.setText(str(output_folder))
        source, target = self.input_edit.text().strip(), self.output_edit.text().strip()
        if not source or not target:
            show_error("choose both an image folder and an output folder")
            return
        if self.series is not None and not self._leave_current():
            return
        try:
            series = Series(source, target)
        except SamscopeError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return
        self.series, self.index, self._prefetched = series, None, {}
        self._enable_navigation(True)
        self._show(series.resume_index())

    def step(self, delta: int) -> None:
        """Previous (-1) / Next (+1) image, wrapping around."""
        if self.series is not None and self.index is not None:
            self.go((self.index + delta) % len(self.series))

    def next_to_do(self) -> None:
        if self.series is None:
            return
        if self._changed() and not self._save_current():
            return
        todo = self.series.next_to_do(after=self.index)
        if todo is None:
            self._refresh_progress()
            show_info(f"all {len(self.series)} images are done")
            return
        self.go(todo)

    def go(self, index: int) -> None:
        """Show image `index`, saving the current one first if its labels changed."""
        if self.series is None or not 0 <= index < len(self.series):
            return
        if index == self.index:
            self._refresh_progress()
            return
        if not self._leave_current():
            self._refresh_progress()  # the jump list goes back to the image still shown
            return
        self._show(index)

    def save(self) -> bool:
        """Save the shown image's labels and provenance; it counts as done."""
        ok = self._save_current()
        if ok:
            self._set_status(f"saved {self.series.items[self.index].name!r}")
        return ok

    def save_and_next(self) -> None:
        if self.save():
            self.next_to_do()

    # ------------------------------------------------------------------ show and leave
    def _leave_current(self) -> bool:
        """Save the shown image if its labels changed; False (stay) when saving failed."""
        return not self._changed() or self._save_current()

    def _labels_layer(self) -> Any | None:
        layer = self._layers[-1] if self._layers else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def _state_of(self, layer: Any) -> tuple[np.ndarray, str]:
        held = layer_provenance.records(layer)
        return np.asarray(layer.data), json.dumps(held, sort_keys=True, default=str)

    def _changed(self) -> bool:
        layer = self._labels_layer()
        if layer is None or self._opened is None:
            return False
        data, records = self._state_of(layer)
        opened_data, opened_records = self._opened
        return records != opened_records or not np.array_equal(data, opened_data)

    def _save_current(self) -> bool:
        layer = self._labels_layer()
        if self.series is None or self.index is None:
            return False
        if layer is None:
            show_error(
                f"the labels layer of {self.series.items[self.index].name!r} was removed; "
                "nothing to save"
            )
            return False
        layer_provenance.prune(layer)
        try:
            records = layer_provenance.typed_records(layer)
            self.series.save(self.index, np.asarray(layer.data), records)
        except SamscopeError as exc:
            show_error(f"not saved: {exc}")
            self._set_status(f"not saved: {exc}")
            return False
        self._opened = self._state_of(layer)
        self._opened = (self._opened[0].copy(), self._opened[1])
        self._refresh_progress()
        return True

    def _show(self, index: int) -> None:
        series = self.series
        item = series.items[index]
        annotator = self._annotator()
        channel = annotator.channel if annotator is not None else None
        try:
            layers = self._prefetched.pop(index, None)
            if layers is None:
                layers, target = viewer_layers(item.image, channel)
            else:
                target = _target_index(layers, channel)
        except SamscopeError as exc:
            show_error(f"{item.image.name}: {exc}")
            self._set_status(f"can't open {item.image.name}: {exc}")
            return
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        added = []
        for data, meta, _ in layers:
            result = self.viewer.add_image(data, **meta)
            added.extend(result if isinstance(result, list) else [result])
        image_layer = added[target]
        image_layer.metadata[layer_provenance.IMAGE_PATH_KEY] = str(item.image)
        layout = layout_of(image_layer.data.shape, image_layer.rgb, None)
        labels, note = self._labels_for(index, layout.labels_shape)
        labels_layer = self.viewer.add_labels(labels, name=SERIES_LABELS)
        records, note2 = self._records_for(index)
        labels_layer.metadata[layer_provenance.METADATA_KEY] = records
        layer_provenance.prune(labels_layer)
        self._layers = [*added, labels_layer]
        self._opened = (labels.copy(), self._state_of(labels_layer)[1])
        self.index = index
        series.set_current(index)
        if annotator is not None:
            self._point_annotator(annotator, image_layer, labels_layer, added)
        self._refresh_progress()
        done = "done" if series.is_done(index) else "to do"
        notes = "; ".join(n for n in (note, note2) if n)
        self._set_status(
            f"{item.name} ({index + 1} of {len(series)}, {done})" + (f": {notes}" if notes else "")
        )
        self._prefetch(series.next_to_do(after=index), annotator)

    def _labels_for(self, index: int, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
        path, _ = self.series.labels_to_open(index)
        if path is None:
            return np.zeros(shape, np.uint32), ""
        try:
            labels = np.asarray(read_image(path))
        except SamscopeError as exc:
            show_warning(f"{path}: {exc}; starting with empty labels (the file is kept)")
            return np.zeros(shape, np.uint32), f"labels unreadable ({path.name})"
        if labels.shape != shape or labels.dtype.kind not in "iub":
            show_warning(
                f"{path} holds {labels.dtype} labels of shape {labels.shape}, not integer ids "
                f"of {shape}; starting with empty labels (the file is kept)"
            )
            return np.zeros(shape, np.uint32), "labels did not fit"
        return labels.astype(np.uint32), f"labels from {path.parent.parent.name}/labels"

    def _records_for(self, index: int) -> tuple[dict, str]:
        path, sidecar = self.series.labels_to_open(index)
        if sidecar is None:
            return {}, ""
        try:
            return layer_provenance.load_records(path), ""
        except SamscopeError as exc:
            show_warning(f"provenance not loaded: {exc}")
            return {}, "provenance not loaded"

    def _refresh_progress(self) -> None:
        series = self.series
        if series is None or not self._alive:
            return
        self.progress.setRange(0, len(series))
        self.progress.setValue(series.n_done)
        self.jump_combo.blockSignals(True)
        self.jump_combo.clear()
        for i, item in enumerate(series.items):
            self.jump_combo.addItem(("✓ " if series.is_done(i) else "   ") + item.name)
        if self.index is not None:
            self.jump_combo.setCurrentIndex(self.index)
        self.jump_combo.blockSignals(False)

    # ----------------------------------------------------------------- the annotator
    def _annotator(self) -> Any | None:
        """The "Segment Anything" dock widget (opened if it isn't)."""
        try:
            _, widget = self.viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
        except Exception as exc:  # no Qt window (headless viewer): annotate without it
            show_warning(f"the annotator could not be opened: {exc}")
            return None
        return widget

    def _point_annotator(self, annotator, image_layer, labels_layer, added) -> None:
        annotator._refresh_layer_choices()
        annotator.image_combo.setCurrentText(image_layer.name)
        annotator.labels_combo.setCurrentText(labels_layer.name)
        if len(added) > 1:  # one layer per channel: each layer is one channel already
            annotator.channel_spin.setValue(-1)
        annotator.undo_stack.clear()  # undo items of the previous image's layer

    def _prefetch(self, index: int | None, annotator) -> None:
        """Read image `index` and compute its embedding in the background (memory cache)."""
        if index is None or index == self.index or self._prefetch_worker is not None:
            return
        if annotator is None:
            return
        item = self.series.items[index]
        model = annotator.model_combo.currentText()
        cache = annotator.cache_edit.text().strip() or None
        channel, options = annotator.channel, dict(annotator.session_options)

        def work():
            layers, target = viewer_layers(item.image, channel)
            data, rgb = _target_plane(layers, target)
            split = len(_names(layers)) > 1  # one layer per channel: no channel choice left
            image = session_image(data, rgb, None if split else channel)
            if image.n_slices is None:
                Session(model, device=None, cache_dir=cache, **options).embed(image)
            return index, layers

        self._prefetch_worker = jobs.start_function_job(work, self._on_prefetched, "read-ahead")

    def _on_prefetched(self, result: object) -> None:
        self._prefetch_worker = None
        if not self._alive or not jobs.report(result):
            return
        index, layers = result
        self._prefetched = {index: layers}  # only the next one is kept
