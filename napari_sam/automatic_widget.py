"""The "Automatic segmentation" dock widget: every object of the image (or current slice).

Run computes the generator's candidates once in a worker (`compute_candidates`, the model
pass, with progress and cancel); moving the IoU / stability / min-area controls re-runs only
`select` (no model) and rewrites the instance Labels layer. Images with a side above 2048
pixels are embedded tile by tile by the generator.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sam_core import AutomaticMaskGenerator, masks_to_label_image
from sam_core.errors import SamscopeError
from sam_core.session import OFFICIAL_AUTOMATIC_SETTINGS, Session, tuned_thresholds

from . import jobs
from .image_source import layout_of, session_image
from .layer_transforms import apply_transform, transform_kwargs

OUTPUT = "SAM automatic"


class _Cancelled(Exception):
    """Raised from the progress callback to stop the generator."""


class AutomaticWidget(QWidget):
    """Automatic masks for the chosen image layer; npe2 passes `napari_viewer`."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.candidates = None  # MaskCandidates of the last run
        self.generator: AutomaticMaskGenerator | None = None
        self._run_target: tuple[str, int | None] | None = None  # (image name, slice)
        self._worker = None
        self._select_worker = None
        self._select_pending = False
        self._cancelled = False
        self._alive = True
        self.n_objects = 0

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.addItems(["vit_t", "vit_b", "vit_l", "vit_h"])
        self.channel_spin = _spin(-1, 63, -1)
        self.channel_spin.setSpecialValueText("auto")
        self.points_spin = _spin(4, 64, 32)
        self.iou_spin = _fspin(OFFICIAL_AUTOMATIC_SETTINGS["pred_iou_thresh"])
        self.stability_spin = _fspin(OFFICIAL_AUTOMATIC_SETTINGS["stability_score_thresh"])
        self.min_area_spin = _spin(0, 1_000_000, 0)
        form = QFormLayout()
        for label, widget in (
            ("image", self.image_combo),
            ("model", self.model_combo),
            ("channel", self.channel_spin),
            ("points per side", self.points_spin),
            ("predicted IoU ≥", self.iou_spin),
            ("stability ≥", self.stability_spin),
            ("min area (px)", self.min_area_spin),
        ):
            form.addRow(label, widget)
        for spin in (self.iou_spin, self.stability_spin, self.min_area_spin):
            spin.valueChanged.connect(lambda _=None: self.reselect())
        self.model_combo.currentTextChanged.connect(self._apply_tuned_thresholds)
        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status_label = QLabel("choose an image and press Run")
        self.status_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self.destroyed.connect(self._on_destroyed)
        self._refresh_images()

    def _apply_tuned_thresholds(self, model: str) -> None:
        """A fine-tuned model's file with searched thresholds in its model.json: use them."""
        found = tuned_thresholds(model.strip())
        if found is None:
            return
        self.iou_spin.setValue(found["pred_iou_thresh"])
        self.stability_spin.setValue(found["stability_score_thresh"])
        self.status_label.setText(
            f"thresholds of the fine-tuned model (its model.json): IoU ≥ "
            f"{found['pred_iou_thresh']:.2f}, stability ≥ {found['stability_score_thresh']:.2f}"
        )

    def _refresh_images(self, event: object = None) -> None:
        if not self._alive:
            return
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, napari.layers.Image)]
        current = self.image_combo.currentText()
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False
        self.cancel()

    # --------------------------------------------------------------------------- run
    def run(self) -> None:
        """Compute the candidates of the current image / slice (model pass, in a worker)."""
        if self._worker is not None:
            show_error("automatic segmentation is already running; wait or press Cancel")
            return
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if not isinstance(layer, napari.layers.Image):
            show_error("no image layer: open or add an image first")
            return
        channel = None if self.channel_spin.value() < 0 else self.channel_spin.value()
        try:
            stack = layout_of(layer.data.shape, layer.rgb, channel).n_slices
        except SamscopeError as exc:
            show_error(str(exc))
            return
        z = (
            int(self.viewer.dims.current_step[self.viewer.dims.ndim - layer.ndim])
            if stack
            else None
        )
        model, data, rgb = self.model_combo.currentText(), layer.data, layer.rgb
        points_per_side = self.points_spin.value()
        self._cancelled = False
        started: dict[str, object] = {}

        def progress(done: int, total: int) -> None:
            if self._cancelled:
                raise _Cancelled
            if "worker" in started:  # emitted from the worker thread, queued to the GUI
                started["worker"].yielded.emit((done, total))

        def work():
            session = Session(model, device=None)
            image = session_image(data, rgb, channel)
            amg = session.automatic_generator(points_per_side=points_per_side, iou_floor=0.5)
            try:
                candidates = session.automatic_candidates(image, z, amg, progress)
            except _Cancelled:
                return None
            return amg, candidates, (name, z), image.image_hw
            yield  # a generator, so that progress can be emitted as `yielded`

        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status_label.setText("computing candidate masks…")
        self._worker = jobs.start_generator_job(work, self._on_progress, self._on_done, "automatic")
        started["worker"] = self._worker

    def _on_progress(self, value: tuple[int, int]) -> None:
        if self._alive:
            self.progress.setRange(0, value[1])
            self.progress.setValue(value[0])

    def _on_done(self, result: object) -> None:
        self._worker = None
        if not self._alive:
            return
        self.progress.setVisible(False)
        if not jobs.report(result):
            self.status_label.setText("stopped")
            return
        self.generator, self.candidates, self._run_target, self._hw = result
        self.reselect()

    def cancel(self) -> None:
        self._cancelled = True
        if self._alive:
            self.status_label.setText("cancelling…" if self._worker else "idle")

    # ------------------------------------------------------------------------ select
    def reselect(self) -> None:
        """Apply the current thresholds to the stored candidates (no model), update labels."""
        if self.candidates is None or not self._alive:
            return
        if self._select_worker is not None:
            self._select_pending = True  # latest wins
            return
        amg, candidates, hw = self.generator, self.candidates, self._hw
        iou, stability = self.iou_spin.value(), self.stability_spin.value()
        min_area = self.min_area_spin.value()

        def work() -> np.ndarray:
            records = amg.select(
                candidates,
                pred_iou_thresh=iou,
                stability_score_thresh=stability,
                min_mask_region_area=min_area,
            )
            return masks_to_label_image(records, hw), len(records)

        self._select_worker = jobs.start_function_job(work, self._on_selected, "mask selection")

    def _on_selected(self, result: object) -> None:
        self._select_worker = None
        if not self._alive:
            return
        if self._select_pending:
            self._select_pending = False
            self.reselect()
            return
        if not jobs.report(result):
            return
        label_image, self.n_objects = result
        self._write_labels(label_image)
        self.status_label.setText(
            f"{self.n_objects} objects (IoU ≥ {self.iou_spin.value():.2f}, stability ≥ "
            f"{self.stability_spin.value():.2f}, area ≥ {self.min_area_spin.value()} px)"
        )

    def _write_labels(self, label_image: np.ndarray) -> None:
        """Write (H, W) instance ids into the `SAM automatic` layer (slice z of a stack), a
        layer placed like the image (its scale, translate, rotation) so it overlays it."""
        name, z = self._run_target
        image = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if image is None and z is not None:
            show_error(f"image {name!r} was removed; the result was not written")
            return
        shape = label_image.shape if z is None else (image.data.shape[0], *label_image.shape)
        try:
            placement = {} if image is None else transform_kwargs(image, len(shape))
        except SamscopeError as exc:  # channel axis rotated into the others: no 2-D placement
            show_error(f"{exc}; the labels are shown unscaled")
            placement = {}
        output = self.viewer.layers[OUTPUT] if OUTPUT in self.viewer.layers else None  # noqa: SIM401
        if output is None or tuple(output.data.shape) != shape:
            if output is not None:
                output.name = f"{OUTPUT} (old)"  # never drop a result the user may have edited
            output = self.viewer.add_labels(np.zeros(shape, np.uint32), name=OUTPUT, **placement)
        elif placement:
            apply_transform(output, placement)  # e.g. the image was moved since the last run
        if z is None:
            output.data = label_image
        else:
            output.data[z] = label_image
            output.refresh()


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _fspin(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.5, 1.0)
    spin.setSingleStep(0.01)
    spin.setValue(value)
    return spin
