"""The "Fine-tune" dock widget: train SAM on the Labels an analyst committed.

Pick an image layer and the Labels layer of its objects (e.g. `SAM objects`, written by the
Segment Anything widget). A 2-D image, or each slice of a stack with at least one object,
becomes one `sam_core.evaluation.datasets.Sample`; some are held out for validation, and
`sam_core.training.finetune` runs in a worker with a progress bar, its log lines and Cancel
(between steps; every finished epoch is saved, so Start with Resume continues). The output
folder gets `model.pth` (+ best.pth, the model.json card, resume.pth); "Use in Segment
Anything" makes the annotator segment with it. The widget only turns layers into samples and
its controls into a `FinetuneConfig`. The Labels layer is only read (copied at Start).

"train: instance decoder" (issue 15) trains `sam_core.instance`'s decoder instead, on the same
samples with the encoder frozen (each image embedded once): `train_decoder` in a worker, with
progress and Cancel (finished epochs are saved; Start with Resume continues). The folder gets
``instance_decoder.pth``, the ``model.json`` entry that lists it and ``model.pth`` (the base
weights it belongs to); "Use in automatic segmentation" picks that model in the Automatic
segmentation widget in mode ``decoder``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import napari
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sam_core import DEFAULT_MODEL, Predictor, list_models, load_model
from sam_core.errors import SamscopeError
from sam_core.finetuning import (
    FIRST_POINTS,
    TRAINABLE,
    FinetuneConfig,
    finetune,
    split_samples,
    store_tuned_thresholds,
)
from sam_core.instance import DECODER_FILE, TrainConfig, prepare_items, train_decoder
from sam_core.session import Session, use_predictor

from . import jobs
from .finetune_inputs import (
    SPLIT_CHECKBOX,
    cancel_message,
    decoder_summary,
    labelled_planes,
    miou_summary,
    split_note,
    validation_count,
    writable_folder,
)

PREVIEW = "SAM preview"  # the annotator's helper layer: a preview, never training labels
MODEL_FILE = "model.pth"  # = sam_core.training.checkpointing.MODEL_FILE
ENCODER_TRAINS = ("partial", "all")
TRAIN_SAM = "SAM (prompted masks)"
TRAIN_DECODER = "instance decoder (automatic masks)"


class _Cancelled(Exception):
    """Raised from finetune's callbacks after Cancel; `at_epoch_end`: raised after a save."""

    def __init__(self, at_epoch_end: bool) -> None:
        super().__init__("cancelled")
        self.at_epoch_end = at_epoch_end


class _Relay(QObject):
    """Carries ("log", line) and ("progress", done, total) from the worker thread to the GUI
    thread (a queued connection: the widget lives in the GUI thread)."""

    message = Signal(tuple)


class _RunCallbacks:
    """A worker's emit / progress / log callbacks for a training run.

    Messages go to the GUI thread through the relay. After Cancel, the next `progress` call
    raises `_Cancelled` (mid-epoch), and with `stop_on_log` so does the next `log` call (used
    where training logs an epoch only after saving it). `step` / `total`: the last progress.
    """

    def __init__(self, relay: _Relay, stop: threading.Event, stop_on_log: bool) -> None:
        self._relay, self._stop, self._stop_on_log = relay, stop, stop_on_log
        self.step: int | None = None
        self.total = 0

    def emit(self, kind: str, *value: object) -> None:
        self._relay.message.emit((kind, *value))

    def progress(self, done: int, total: int) -> None:
        self.step, self.total = done, total
        self.emit("progress", done, total)
        if self._stop.is_set():
            raise _Cancelled(at_epoch_end=False)

    def log(self, line: str) -> None:
        self.emit("log", line)
        if self._stop_on_log and self._stop.is_set():
            raise _Cancelled(at_epoch_end=True)

    def cancelled(self, stop: _Cancelled, epochs: int, out: Path) -> _Stopped:
        return _Stopped(cancel_message(self.step, self.total, epochs, stop.at_epoch_end, out))


@dataclass(frozen=True)
class _DecoderTrained:
    """A finished instance-decoder run: its model.json entry, decoder file and model.pth."""

    entry: dict
    decoder_path: Path
    model_path: Path


@dataclass(frozen=True)
class _Stopped:
    """A run that ended on Cancel (not an error)."""

    message: str


# ---------------------------------------------------------------------------- widget
class FinetuneWidget(QWidget):
    """Fine-tune a model on an image + Labels pair; npe2 passes `napari_viewer`."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.card: dict | None = None  # of the last finished run
        self.model_path: Path | None = None
        self.decoder_path: Path | None = None  # of the last finished decoder run
        self._worker = None
        self._stop = threading.Event()  # Cancel: checked by the worker between steps
        self._alive = True
        self._relay = _Relay()
        self._relay.message.connect(self._on_message)
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.destroyed.connect(self._on_destroyed)
        self._refresh_layers()

    def _build_ui(self) -> None:
        self.target_combo = QComboBox()
        self.target_combo.addItems([TRAIN_SAM, TRAIN_DECODER])
        self.target_combo.setToolTip(
            "SAM: fine-tune SAM for prompted masks. instance decoder: a light network on SAM's "
            "frozen embeddings for automatic masks (Automatic segmentation, mode decoder)"
        )
        self.decoder_steps_spin = _spin(0, 100_000, 0, special="auto")
        self.decoder_steps_spin.setToolTip(
            "instance decoder: training steps (8 random crops each) per epoch; auto: every "
            "image twice per epoch"
        )
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.channel_spin = _spin(-1, 63, -1, special="auto")
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)  # a checkpoint path (e.g. an earlier model.pth)
        self.model_combo.addItems([m.name for m in list_models()])
        self.model_combo.setCurrentText(DEFAULT_MODEL)
        self.trainable_combo = QComboBox()
        self.trainable_combo.addItems(TRAINABLE)
        self.trainable_combo.setToolTip(
            "decoder: fast, runs on a CPU (embeddings computed once); partial / all also "
            "train the image encoder (needs a GPU)"
        )
        self.epochs_spin = _spin(1, 10_000, 10)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1e-2)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(1e-4)
        self.val_spin = _spin(-1, 10_000, -1, special="auto (20 %)")
        self.objects_spin = _spin(1, 256, 16)
        self.point_rounds_spin = _spin(0, 32, 8)
        self.refine_rounds_spin = _spin(0, 32, 2)
        self.flips_check = QCheckBox("also train on left-right mirrored images")
        self.augment_check = QCheckBox("random flips and quarter turns")
        self.augment_check.setToolTip(
            "show each image under a random one of its 8 flips/quarter turns (trained encoder), "
            "or train on all 8 (frozen encoder: 8x the steps per epoch)"
        )
        defaults = FinetuneConfig()
        self.first_point_combo = QComboBox()
        self.first_point_combo.addItems(FIRST_POINTS)
        self.first_point_combo.setCurrentText(defaults.first_point)
        self.first_point_combo.setToolTip(
            "where the simulated first click lands: anywhere in the object (the paper), or "
            "in its interior, where you click"
        )
        self.rank_spin = QDoubleSpinBox()
        self.rank_spin.setRange(0.0, 10.0)
        self.rank_spin.setSingleStep(0.5)
        self.rank_spin.setValue(defaults.iou_rank_weight)
        self.rank_spin.setToolTip(
            "weight of the term that teaches the IoU head to rank the best of the 3 masks "
            "first (0: the paper's loss only)"
        )
        self.split_check = QCheckBox(SPLIT_CHECKBOX)
        self.split_check.setToolTip(
            "for Labels where all objects have one value (a binary mask): each separate blob "
            "becomes one object; without it such Labels are refused (they would train as one "
            "merged object). The layer itself is not changed."
        )
        self.thresholds_check = QCheckBox("choose automatic-mask thresholds on validation images")
        self.thresholds_check.setChecked(True)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("folder for model.pth, model.json, resume.pth")
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse())
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit)
        out_row.addWidget(browse)
        self.resume_check = QCheckBox("resume an earlier run in this folder")
        self.resume_check.setChecked(True)
        form = QFormLayout()
        for label, widget in (
            ("train", self.target_combo),
            ("image", self.image_combo),
            ("channel", self.channel_spin),
            ("labels", self.labels_combo),
            ("base model", self.model_combo),
            ("trainable", self.trainable_combo),
            ("epochs", self.epochs_spin),
            ("learning rate", self.lr_spin),
            ("validation images", self.val_spin),
            ("objects per step", self.objects_spin),
            ("point rounds", self.point_rounds_spin),
            ("mask-only rounds", self.refine_rounds_spin),
            ("first click", self.first_point_combo),
            ("IoU ranking weight", self.rank_spin),
            ("decoder steps / epoch", self.decoder_steps_spin),
        ):
            form.addRow(label, widget)
        form.addRow(self.flips_check)
        form.addRow(self.augment_check)
        form.addRow(self.split_check)
        form.addRow(self.thresholds_check)
        form.addRow("output folder", out_row)
        form.addRow(self.resume_check)
        self.start_button, self.cancel_button = QPushButton("Start"), QPushButton("Cancel")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status_label = QLabel("choose the image, its labels and an output folder")
        self.status_label.setWordWrap(True)
        self.log_box = QPlainTextEdit()
        self.log_box.setReadOnly(True)
        self.log_box.setMaximumBlockCount(2000)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.path_edit = QLineEdit()
        self.path_edit.setReadOnly(True)
        self.path_edit.setPlaceholderText("the fine-tuned model.pth appears here")
        self.use_button = QPushButton("Use in Segment Anything")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(lambda: self.use_in_annotator())
        self.use_automatic_button = QPushButton("Use in automatic segmentation")
        self.use_automatic_button.setEnabled(False)
        self.use_automatic_button.clicked.connect(lambda: self.use_in_automatic())
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        for child in (self.progress, self.status_label, self.log_box, self.result_label):
            layout.addWidget(child)
        layout.addWidget(self.path_edit)
        layout.addWidget(self.use_button)
        layout.addWidget(self.use_automatic_button)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)

    def _refresh_layers(self, event: object = None) -> None:
        if not self._alive:
            return
        layers = self.viewer.layers
        images = [ly.name for ly in layers if isinstance(ly, napari.layers.Image)]
        labels = [
            ly.name for ly in layers if isinstance(ly, napari.layers.Labels) and ly.name != PREVIEW
        ]
        for combo, names in ((self.image_combo, images), (self.labels_combo, labels)):
            current = combo.currentText()
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif "SAM objects" in names:  # what the annotator commits to by default
                combo.setCurrentText("SAM objects")

    def _layer(self, combo: QComboBox, kind: type) -> object | None:
        name = combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        return layer if isinstance(layer, kind) else None

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False
        self._stop.set()

    def _set_status(self, text: str) -> None:
        if self._alive:
            self.status_label.setText(text)

    def _append_log(self, line: str) -> None:
        if self._alive:
            self.log_box.appendPlainText(line)

    # ---------------------------------------------------------------------------- run
    def config(self) -> FinetuneConfig:
        return FinetuneConfig(
            epochs=self.epochs_spin.value(),
            lr=self.lr_spin.value(),
            trainable=self.trainable_combo.currentText(),
            objects_per_step=self.objects_spin.value(),
            point_rounds=self.point_rounds_spin.value(),
            refine_rounds=self.refine_rounds_spin.value(),
            flips=self.flips_check.isChecked(),
            augment=self.augment_check.isChecked(),
            first_point=self.first_point_combo.currentText(),
            iou_rank_weight=self.rank_spin.value(),
            split_binary=self.split_check.isChecked(),
        )

    def start(self) -> None:
        """Check the input, snapshot the labels, and run `finetune` in a worker."""
        if self._worker is not None:
            show_error("fine-tuning is already running; wait or press Cancel")
            return
        channel = None if self.channel_spin.value() < 0 else self.channel_spin.value()
        labels_layer = self._layer(self.labels_combo, napari.layers.Labels)
        try:
            planes = labelled_planes(
                self._layer(self.image_combo, napari.layers.Image),
                labels_layer,
                channel,
                self.split_check.isChecked(),
            )
            requested = None if self.val_spin.value() < 0 else self.val_spin.value()
            n_val = validation_count(len(planes.planes), requested)
            out = writable_folder(self.out_edit.text())
        except SamscopeError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return
        if self.target_combo.currentText() == TRAIN_DECODER:
            self._start_decoder(planes, n_val, out, labels_layer.name)
            return
        config, base = self.config(), self.model_combo.currentText().strip()
        resume = self.resume_check.isChecked()
        search_thresholds = self.thresholds_check.isChecked()
        data_info = {"napari_image": planes.image_name, "napari_labels": labels_layer.name}
        self._stop.clear()
        # finetune logs an epoch after saving it, so a stop at a log line loses nothing
        calls = _RunCallbacks(self._relay, self._stop, stop_on_log=True)
        emit = calls.emit

        def work():
            samples = planes.samples()
            train, val = split_samples(samples, n_val) if n_val else (samples, [])
            emit("log", split_note(len(train), len(val)))
            emit("log", f"loading the base model {base or DEFAULT_MODEL}")
            model = load_model(base or DEFAULT_MODEL, device="cpu")
            if self._stop.is_set():
                return _Stopped(cancel_message(None, 0, config.epochs, False, out))
            frozen = config.trainable not in ENCODER_TRAINS
            emit("log", "embedding the images once (frozen encoder)" if frozen else "training")
            try:
                card = finetune(
                    model,
                    train,
                    val,
                    out,
                    config,
                    data_info,
                    resume,
                    progress=calls.progress,
                    log=calls.log,
                )
            except _Cancelled as stop:
                return calls.cancelled(stop, config.epochs, out)
            path = out / MODEL_FILE
            _register(model, path, encoder_trained=not frozen)
            if val and card["history"] and search_thresholds:
                emit("log", f"choosing automatic-mask thresholds on {len(val)} validation images")
                found = store_tuned_thresholds(model, val, out, card)
                emit(
                    "log",
                    f"automatic masks: IoU ≥ {found['pred_iou_thresh']}, stability ≥ "
                    f"{found['stability_score_thresh']} (val AP50 {found['value']:.3f}); "
                    "stored in model.json, the Automatic segmentation widget uses them",
                )
            return card, path

        self._launch(planes, work, "fine-tuning")

    def _launch(self, planes, work, what: str) -> None:
        """Reset the result controls, show the labels notes, run `work` in a worker."""
        self.card, self.model_path, self.decoder_path = None, None, None
        self.use_button.setEnabled(False)
        self.use_automatic_button.setEnabled(False)
        self.result_label.setText("")
        self.path_edit.clear()
        self.log_box.clear()
        for note in planes.notes:  # binary planes split into objects
            self._append_log(note)
        if planes.notes:
            many = f"{len(planes.notes)} binary label planes split into objects (see the log)"
            show_warning(planes.notes[0] if len(planes.notes) == 1 else many)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.start_button.setEnabled(False)
        self._set_status("loading the model and embedding the images…")
        self._worker = jobs.start_function_job(work, self._on_done, what)

    def decoder_config(self) -> TrainConfig:
        """The controls as the instance decoder's `TrainConfig` (its own learning rate)."""
        steps = self.decoder_steps_spin.value()
        return TrainConfig(epochs=self.epochs_spin.value(), steps_per_epoch=steps or None)

    def _start_decoder(self, planes, n_val: int, out: Path, labels_name: str) -> None:
        """Train the instance decoder on the labelled planes (encoder frozen) in a worker."""
        config, base = self.decoder_config(), self.model_combo.currentText().strip()
        resume = self.resume_check.isChecked()
        data_info = {"napari_image": planes.image_name, "napari_labels": labels_name}
        self._stop.clear()
        # train_decoder saves an epoch after its last step's progress call and before the
        # next epoch's first, so a stop at a progress call keeps every saved epoch
        calls = _RunCallbacks(self._relay, self._stop, stop_on_log=False)
        emit = calls.emit

        def work():
            samples = planes.samples()
            train, val = split_samples(samples, n_val) if n_val else (samples, [])
            emit("log", split_note(len(train), len(val)))
            emit("log", f"loading the base model {base or DEFAULT_MODEL}")
            session = Session(base or DEFAULT_MODEL, device=None)
            emit("log", "embedding the images once (frozen encoder)")
            side = config.work_side
            warn = lambda line: emit("log", line)  # noqa: E731
            train_items = prepare_items(session, train, side, warn=warn)
            val_items = prepare_items(session, val, side, warn=warn) if val else []
            if self._stop.is_set():
                return _Stopped(cancel_message(None, 0, config.epochs, False, out))
            try:
                result = train_decoder(
                    session,
                    train_items,
                    val_items,
                    out,
                    config,
                    resume=resume,
                    log=calls.log,
                    progress=calls.progress,
                    data_info=data_info,
                )
            except _Cancelled as stop:
                return calls.cancelled(stop, config.epochs, out)
            return _DecoderTrained(result.entry, out / DECODER_FILE, out / MODEL_FILE)

        self._launch(planes, work, "instance decoder training")

    def _on_message(self, value: tuple) -> None:
        if not self._alive:
            return
        if value[0] == "log":
            self._append_log(value[1])
        else:
            done, total = value[1], value[2]
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self._set_status(f"training: step {done} of {total}")

    def _on_done(self, result: object) -> None:
        self._worker = None
        if not self._alive:
            return
        self.progress.setVisible(False)
        self.start_button.setEnabled(True)
        if isinstance(result, _Stopped):
            self._append_log(result.message)
            self._set_status(result.message)
            return
        if isinstance(result, jobs.Failure):
            self._append_log(result.message)
            self._set_status(result.message)
        if not jobs.report(result):
            return
        if isinstance(result, _DecoderTrained):
            self.card, self.model_path = result.entry, result.model_path
            self.decoder_path = result.decoder_path
            self.result_label.setText(decoder_summary(result.entry))
            self.path_edit.setText(str(result.model_path))
            self.use_automatic_button.setEnabled(True)
            self._set_status(
                f"done: {result.decoder_path}, listed in model.json beside {result.model_path} "
                "(press Use in automatic segmentation, or pick that model.pth there)"
            )
            return
        self.card, self.model_path = result
        self.result_label.setText(miou_summary(self.card))
        self.path_edit.setText(str(self.model_path))
        self.use_button.setEnabled(True)
        if self.model_combo.findText(str(self.model_path)) < 0:
            self.model_combo.addItem(str(self.model_path))  # a base for another round
        self._set_status(
            f"done: {self.model_path} (load it with load_model or pick it in the Segment "
            "Anything widget's model box)"
        )

    def cancel(self) -> None:
        """Stop at the next training step (the epochs already finished stay saved)."""
        self._stop.set()
        if self._alive:
            self._set_status("cancelling at the next step…" if self._worker else "idle")

    def use_in_annotator(self) -> None:
        """Select the fine-tuned model in the Segment Anything widget (opened if needed) and
        list it in the Automatic segmentation widget's model box."""
        if self.model_path is None:
            show_error("no fine-tuned model yet: press Start first")
            return
        from .annotator import AnnotatorWidget
        from .automatic_widget import AutomaticWidget

        docked = list(self.viewer.window.dock_widgets.values())
        if not any(isinstance(w, AnnotatorWidget) for w in docked):
            _, annotator = self.viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
            docked.append(annotator)
        path = str(self.model_path)
        for widget in docked:
            if isinstance(widget, (AnnotatorWidget, AutomaticWidget)):
                if widget.model_combo.findText(path) < 0:
                    widget.model_combo.addItem(path)
                if isinstance(widget, AnnotatorWidget):
                    widget.model_combo.setCurrentText(path)
        self._set_status(f"the Segment Anything widget now uses {path}")

    def use_in_automatic(self) -> None:
        """Pick the trained decoder's model.pth in the Automatic segmentation widget (opened if
        needed), in mode ``decoder``."""
        if self.decoder_path is None or self.model_path is None:
            show_error("no instance decoder yet: choose train: instance decoder and press Start")
            return
        from .automatic_widget import AutomaticWidget

        docked = [
            w for w in self.viewer.window.dock_widgets.values() if isinstance(w, AutomaticWidget)
        ]
        if not docked:
            _, widget = self.viewer.window.add_plugin_dock_widget(
                "samscope", "Automatic segmentation"
            )
            docked = [widget]
        path = str(self.model_path)
        for widget in docked:
            if widget.model_combo.findText(path) < 0:
                widget.model_combo.addItem(path)
            widget.model_combo.setCurrentText(path)  # enables the decoder modes
            widget.mode_combo.setCurrentText("decoder")
        self._set_status(f"the Automatic segmentation widget now uses {path} (mode decoder)")


def _register(model, path: Path, encoder_trained: bool) -> None:
    """Make the trained model (in memory, equal to the file) the plugin's predictor for
    `path`, so a model.pth retrained in the same folder is never served stale."""
    model.name, model.checkpoint_path, model.checkpoint_sha256 = str(path), path, None
    # Embeddings are keyed on the weights' hash (computed from the new file), never on the
    # path, so a model retrained in the same folder can't be served stale ones.
    use_predictor(str(path), Predictor(model, device=None))


def _spin(low: int, high: int, value: int, special: str | None = None) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    if special:
        spin.setSpecialValueText(special)  # shown for the minimum
    spin.setValue(value)
    return spin
