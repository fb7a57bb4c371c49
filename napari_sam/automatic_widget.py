"""The "Automatic segmentation" dock widget: every object of the image (or current slice).

Three modes (issue 15):

* ``grid`` (the paper's point grid): Run computes the generator's candidates once in a worker
  (`compute_candidates`, the model pass, with progress and cancel); moving the IoU /
  stability / min-area controls re-runs only `select` (no model).
* ``decoder``: a trained instance decoder (`sam_core.instance`, listed in the ``model.json``
  beside the chosen model.pth) predicts foreground / centre / boundary maps, a seeded
  watershed makes the objects. Moving its thresholds re-runs only the watershed: the maps
  stay in core's `MAPS_CACHE`, neither the encoder nor the decoder runs again.
* ``decoder+prompts``: the decoder's objects as one prompt each for SAM's mask decoder; new
  thresholds re-run the watershed and SAM's (light) mask decoder, never the encoder.

The decoder modes are enabled only for a model with a decoder beside it (`decoder_beside`);
the Fine-tune widget or ``samscope train-instance`` trains one. Every mode writes (H, W)
instance ids into the ``SAM automatic`` Labels layer (the current slice of a stack). Images
with a side above 2048 pixels are embedded tile by tile by core.
"""

from __future__ import annotations

from dataclasses import dataclass

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
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
from sam_core.instance import MODES, InstanceThresholds, decoder_beside, load_decoder
from sam_core.session import OFFICIAL_AUTOMATIC_SETTINGS, Session, tuned_thresholds

from . import jobs
from .image_source import layout_of, session_image
from .layer_transforms import apply_transform, transform_kwargs

OUTPUT = "SAM automatic"
GRID = "grid"
ALL_MODES = (GRID, *MODES)  # grid, decoder, decoder+prompts
NO_DECODER = (
    "this model has no instance decoder: train one in the Fine-tune widget (train: instance "
    "decoder) or with `samscope train-instance --data DIR --out DIR`, then choose its "
    "model.pth here"
)


def no_decoder_message(model: str, mode: str) -> str:
    """What the user reads when a decoder mode is asked for a model without a decoder."""
    return (
        f"mode {mode!r} needs an instance decoder, and the model {model!r} has none (no "
        "model.json beside it lists one). Train one in the Fine-tune widget (train: instance "
        "decoder) or with `samscope train-instance`, choose its model.pth, or use mode 'grid'"
    )


@dataclass(frozen=True)
class InstanceRun:
    """What a decoder-mode run segmented, to re-run its post-processing on new thresholds:
    the model, the image layer's data / rgb / channel, the slice z (None: 2-D) and mode."""

    model: str
    data: object
    rgb: bool
    channel: int | None
    z: int | None
    mode: str


class _Cancelled(Exception):
    """Raised from the progress callback to stop the generator."""


class AutomaticWidget(QWidget):
    """Automatic masks for the chosen image layer; npe2 passes `napari_viewer`."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.candidates = None  # MaskCandidates of the last grid run
        self.instance_run: InstanceRun | None = None  # the last decoder-mode run
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
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(ALL_MODES)
        defaults = InstanceThresholds()
        self.foreground_spin = _fspin(defaults.foreground, low=0.0)
        self.centre_spin = _fspin(defaults.centre, low=0.0)
        self.boundary_spin = _fspin(defaults.boundary, low=0.0)
        self.decoder_area_spin = _spin(0, 1_000_000, defaults.min_area)
        self.foreground_spin.setToolTip("pixels with a foreground probability above it")
        self.centre_spin.setToolTip("seeds: centre map above it (and boundary map above its)")
        self.boundary_spin.setToolTip("seeds: distance-to-boundary map above it")
        form = QFormLayout()
        for label, widget in (
            ("image", self.image_combo),
            ("model", self.model_combo),
            ("channel", self.channel_spin),
            ("mode", self.mode_combo),
        ):
            form.addRow(label, widget)
        self.grid_box = _group(
            "point grid",
            (
                ("points per side", self.points_spin),
                ("predicted IoU ≥", self.iou_spin),
                ("stability ≥", self.stability_spin),
                ("min area (px)", self.min_area_spin),
            ),
        )
        self.decoder_box = _group(
            "instance decoder",
            (
                ("foreground >", self.foreground_spin),
                ("centre >", self.centre_spin),
                ("boundary >", self.boundary_spin),
                ("min area (px)", self.decoder_area_spin),
            ),
        )
        for spin in (self.iou_spin, self.stability_spin, self.min_area_spin):
            spin.valueChanged.connect(lambda _=None: self.reselect(GRID))
        for spin in (
            self.foreground_spin,
            self.centre_spin,
            self.boundary_spin,
            self.decoder_area_spin,
        ):
            spin.valueChanged.connect(lambda _=None: self.reselect("decoder"))
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        self.mode_combo.currentTextChanged.connect(self._show_mode_controls)
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
        layout.addWidget(self.grid_box)
        layout.addWidget(self.decoder_box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self.destroyed.connect(self._on_destroyed)
        self._refresh_images()
        self._on_model_changed(self.model_combo.currentText())
        self._show_mode_controls(self.mode_combo.currentText())

    # ------------------------------------------------------------------- model, mode
    def _on_model_changed(self, model: str) -> None:
        self._apply_tuned_thresholds(model)
        self._update_decoder_modes(model)

    def _update_decoder_modes(self, model: str) -> None:
        """Enable the decoder modes when `model` has a decoder beside it (its model.json), and
        take that decoder's tuned thresholds; else disable them (tooltip: how to train one)."""
        found = decoder_beside(model.strip()) if model.strip() else None
        items = self.mode_combo.model()
        for i, mode in enumerate(ALL_MODES):
            if mode == GRID:
                continue
            items.item(i).setEnabled(found is not None)
            items.item(i).setToolTip("" if found else NO_DECODER)
        self.mode_combo.setToolTip(f"instance decoder: {found}" if found else NO_DECODER)
        if found is None:
            if self.mode_combo.currentText() != GRID:
                self.mode_combo.setCurrentText(GRID)
            return
        try:
            thresholds = load_decoder(found).thresholds
        except SamscopeError as exc:
            show_error(str(exc))
            return
        self.set_decoder_thresholds(thresholds)

    def set_decoder_thresholds(self, thresholds: InstanceThresholds) -> None:
        """Show `thresholds` in the decoder controls (no re-run)."""
        for spin, value in (
            (self.foreground_spin, thresholds.foreground),
            (self.centre_spin, thresholds.centre),
            (self.boundary_spin, thresholds.boundary),
            (self.decoder_area_spin, thresholds.min_area),
        ):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    def decoder_thresholds(self) -> InstanceThresholds:
        """The decoder controls as core's `InstanceThresholds`."""
        return InstanceThresholds(
            self.foreground_spin.value(),
            self.centre_spin.value(),
            self.boundary_spin.value(),
            self.decoder_area_spin.value(),
        )

    def _show_mode_controls(self, mode: str) -> None:
        self.grid_box.setVisible(mode == GRID)
        self.decoder_box.setVisible(mode != GRID)

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
        """Segment the current image / slice in the chosen mode (model pass, in a worker):
        grid candidates, or the instance decoder's objects."""
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
        model, data, rgb = self.model_combo.currentText().strip(), layer.data, layer.rgb
        points_per_side = self.points_spin.value()
        mode = self.mode_combo.currentText()
        if mode != GRID and decoder_beside(model) is None:
            message = no_decoder_message(model, mode)
            show_error(message)
            self.status_label.setText(message)
            return
        instance = InstanceRun(model, data, rgb, channel, z, mode)
        thresholds = self.decoder_thresholds()
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
            try:
                if mode != GRID:
                    labels, records = _segment_instances(
                        session, image, instance, thresholds, progress
                    )
                    return instance, labels, len(records), (name, z)
                amg = session.automatic_generator(points_per_side=points_per_side, iou_floor=0.5)
                candidates = session.automatic_candidates(image, z, amg, progress)
            except _Cancelled:
                return None
            return amg, candidates, (name, z), image.image_hw
            yield  # a generator, so that progress can be emitted as `yielded`

        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        what = "candidate masks" if mode == GRID else f"instance decoder objects ({mode})"
        self.status_label.setText(f"computing {what}…")
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
        if isinstance(result, jobs.Failure):
            self.status_label.setText(result.message)
        if not jobs.report(result):
            if result is None:
                self.status_label.setText("stopped")
            return
        if isinstance(result[0], InstanceRun):
            self.instance_run, label_image, self.n_objects, self._run_target = result
            self.candidates = None
            self._write_labels(label_image)
            self.status_label.setText(self._instance_summary())
            return
        self.generator, self.candidates, self._run_target, self._hw = result
        self.instance_run = None
        self.reselect(GRID)

    def cancel(self) -> None:
        self._cancelled = True
        if self._alive:
            self.status_label.setText("cancelling…" if self._worker else "idle")

    # ------------------------------------------------------------------------ select
    def reselect(self, kind: str | None = None) -> None:
        """Apply the current thresholds to the last result (no encoder pass), update labels:
        the grid's stored candidates (`select`), or the decoder's cached maps (watershed;
        decoder+prompts also SAM's mask decoder). kind: "grid" / "decoder" to act only when
        the last result is of that kind (a control of the other mode moved)."""
        if not self._alive:
            return
        if self.instance_run is not None:
            if kind in (None, "decoder"):
                self._rethreshold_instances()
            return
        if self.candidates is None or kind not in (None, GRID):
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
        if self.instance_run is not None:
            self.status_label.setText(self._instance_summary())
            return
        self.status_label.setText(
            f"{self.n_objects} objects (IoU ≥ {self.iou_spin.value():.2f}, stability ≥ "
            f"{self.stability_spin.value():.2f}, area ≥ {self.min_area_spin.value()} px)"
        )

    def _rethreshold_instances(self) -> None:
        """The last decoder run again with the current thresholds, in a worker: core finds
        the decoder's maps in `MAPS_CACHE` (and the embedding in the session's memory), so
        only the watershed (and for decoder+prompts SAM's mask decoder) runs."""
        if self._select_worker is not None:
            self._select_pending = True  # latest wins
            return
        run, thresholds = self.instance_run, self.decoder_thresholds()

        def work() -> tuple[np.ndarray, int]:
            session = Session(run.model, device=None)
            image = session_image(run.data, run.rgb, run.channel)
            labels, records = _segment_instances(session, image, run, thresholds)
            return labels, len(records)

        self._select_worker = jobs.start_function_job(work, self._on_selected, "post-processing")

    def _instance_summary(self) -> str:
        t = self.decoder_thresholds()
        return (
            f"{self.n_objects} objects ({self.instance_run.mode}: foreground > "
            f"{t.foreground:.2f}, centre > {t.centre:.2f}, boundary > {t.boundary:.2f}, area "
            f"≥ {t.min_area} px)"
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


def _segment_instances(session, image, run: InstanceRun, thresholds, progress=None):
    """((H, W) uint32 labels, records) of `run`'s slice by core's instance path."""
    return session.instance_segment(
        image,
        run.z,
        mode=run.mode,
        thresholds=thresholds,
        output_mode="cropped_mask",
        progress=progress,
    )


def _group(title: str, rows) -> QGroupBox:
    box = QGroupBox(title)
    form = QFormLayout(box)
    for label, widget in rows:
        form.addRow(label, widget)
    return box


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _fspin(value: float, low: float = 0.5) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, 1.0)
    spin.setSingleStep(0.01)
    spin.setValue(value)
    return spin
