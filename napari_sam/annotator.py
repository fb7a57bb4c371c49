"""The "Segment Anything" dock widget: click, preview, commit; propagate through stacks.

Keys (on the viewer and on the prompt layers): S segment now, C commit, T toggle the label
of new points, N next candidate mask, X clear prompts, U undo the last commit.
Model work runs in worker threads (`jobs`); the GUI thread only snapshots prompts and
draws results. Logic without a viewer lives in `annotation`, `prompts`, `image_source`.
All coordinates are the image layer's data pixels: helper layers carry the image's transform
(`annotator_layers`, `layer_transforms`), so napari's scale/translate never reach the model.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QWidget,
)

from sam_core.errors import SamscopeError
from sam_core.session import Session

from . import jobs
from .annotation import UndoStack
from .annotator_commit import CommitMixin
from .annotator_layers import (
    BOXES,
    NEGATIVE,
    NEW_LABELS,
    POINTS,
    POSITIVE,
    PREVIEW,
    HelperLayersMixin,
    layer_key,
)
from .annotator_provenance import ProvenanceMixin, image_path_of, prompted_record
from .annotator_review import ReviewMixin
from .annotator_stack import StackJobsMixin
from .annotator_ui import build_controls
from .candidates import Candidates, default_choice
from .image_source import ImageLayout, layout_of, session_image
from .layer_transforms import to_image_pixels
from .prefill import PrefillMixin
from .prompts import SlicePrompts, slice_prompts

# A preview usually arrives within 0.1-0.3 s. Showing the indeterminate (animated) progress
# bar for it re-lays out the dock and repaints the window over and over while the model runs,
# on the CPU the model needs: in a viewer under Xvfb that cost a quarter of click → preview
# (benchmarks/README.md, "napari click to preview"). Previews show the bar and their status
# text only when still running after this delay: the first click on a slice, which computes
# the embedding, takes seconds and still shows it.
PREVIEW_BUSY_DELAY_MS = 300

__all__ = ["BOXES", "NEW_LABELS", "POINTS", "PREVIEW", "AnnotatorWidget"]


class AnnotatorWidget(
    HelperLayersMixin,
    CommitMixin,
    ProvenanceMixin,
    PrefillMixin,
    ReviewMixin,
    StackJobsMixin,
    QWidget,
):
    """Interactive annotator; construct with the viewer (npe2 passes `napari_viewer`)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.undo_stack = UndoStack()
        self.positive_mode = True
        self.candidates: Candidates | None = None
        self.object_masks: dict[int | None, np.ndarray] = {}  # what C commits
        self._generation = 0  # bumps on every prompt change; stale results are dropped
        self._shown_generation = -1
        self._preview_worker = None
        self._preview_pending = False
        self._commit_pending = False
        self._long_worker = None
        self._alive = True
        self._pending_busy: tuple[str, int, int] | None = None
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.timeout.connect(self._show_pending_busy)
        self._helpers: dict[str, object] = {}
        self._watched: set[int] = set()
        self._transform_watched: set[int] = set()
        self._adopted: set[int] = set()
        self._keyed_image: object | None = None
        self._cache_dir: str | None = None  # the zarr cache folder of the running job
        self.session_options: dict = {}  # Session tiling options (max_side, tile_shape, halo)
        self._build_ui()
        self._bind_keys(self.viewer)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.mouse_drag_callbacks.append(self._on_viewer_click)
        self.destroyed.connect(self._on_destroyed)
        self._refresh_layer_choices()

    # ------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        build_controls(self)
        self._update_mode_label()

    def _bind_keys(self, target: object, bind: bool = True) -> None:
        """Bind (or unbind) S C T N X U on the viewer or on one layer: a layer's own keys
        (e.g. the image layer's C = auto-contrast) win over the viewer's while it is active."""
        keys = {
            "s": self.segment,
            "c": self.commit,
            "t": self.toggle_point_label,
            "n": self.next_mask,
            "x": self.clear_prompts,
            "u": self.undo,
        }
        for key, slot in keys.items():
            if bind:
                guarded = self._guarded(slot)
                target.bind_key(key, lambda _owner, s=guarded: s(), overwrite=True)
            elif key in target.keymap:
                target.bind_key(key, None)

    def _set_status(self, text: str) -> None:
        if self._alive:
            self.status_label.setText(text)

    def _busy(self, text: str, total: int = 0, done: int = 0, delay_ms: int = 0) -> None:
        """Show the progress bar (indeterminate when `total` is 0) and `text`; with
        `delay_ms`, only if the job is still running then (`_idle` cancels it) and no bar
        is shown already."""
        self._busy_timer.stop()
        self._pending_busy = None
        if delay_ms > 0 and not self.progress.isVisible():
            self._pending_busy = (text, total, done)
            self._busy_timer.start(delay_ms)
            return
        self.progress.setVisible(True)
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self._set_status(text)

    def _show_pending_busy(self) -> None:
        pending, self._pending_busy = self._pending_busy, None
        if pending is not None and self._alive:
            self._busy(*pending)

    def _idle(self, text: str | None = None) -> None:
        self._busy_timer.stop()
        self._pending_busy = None
        self.progress.setVisible(False)
        if text:
            self._set_status(text)

    # ------------------------------------------------------------------ layers and image
    def _refresh_layer_choices(self, event: object = None) -> None:
        if not self._alive:
            return
        images = [ly.name for ly in self.viewer.layers if isinstance(ly, napari.layers.Image)]
        preview = self._helpers.get(PREVIEW)
        labels = [
            ly.name
            for ly in self.viewer.layers
            if isinstance(ly, napari.layers.Labels)
            and ly.name != PREVIEW
            and (preview is None or layer_key(ly) != layer_key(preview))
        ]
        for combo, names, first in (
            (self.image_combo, images, []),
            (self.labels_combo, labels, [f"<new: {NEW_LABELS}>"]),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(first + names)
            if current in first + names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        if self.image_combo.currentText() != getattr(self, "_image_name", None):
            self._on_image_changed()

    def image_layer(self) -> napari.layers.Image | None:
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        return layer if isinstance(layer, napari.layers.Image) else None

    @property
    def channel(self) -> int | None:
        return None if self.channel_spin.value() < 0 else self.channel_spin.value()

    def image_layout(self) -> ImageLayout:
        """Layout of the chosen image; raises ImageError/PromptError with a message."""
        layer = self.image_layer()
        if layer is None:
            raise SamscopeError("no image layer: open or add an image first")
        return layout_of(layer.data.shape, layer.rgb, self.channel)

    def current_z(self) -> int | None:
        """The slice of the stack shown now (None for a 2-D image): the viewer's world
        position mapped through the image's transform, so a z scale or translate is handled."""
        layer = self.image_layer()
        if layer is None or self.image_layout().n_slices is None:
            return None
        return int(np.round(layer.world_to_data(self.viewer.dims.point)[0]))

    def _on_image_changed(self, *_: object) -> None:
        if not self._alive:
            return
        self._image_name = self.image_combo.currentText()
        self._reset_object()
        if self._keyed_image is not None:
            self._bind_keys(self._keyed_image, bind=False)
            self._keyed_image = None
        layer = self.image_layer()
        self._remove_helpers()
        if layer is None:
            self._set_status("no image layer: open or add an image first")
            return
        try:
            self._create_helpers()  # with the image's scale/translate/rotation
        except SamscopeError as exc:
            self._remove_helpers()
            show_error(str(exc))
            self._set_status(str(exc))
            return
        if layer_key(layer) not in self._watched:  # an edited image makes the preview stale
            self._watched.add(layer_key(layer))
            layer.events.data.connect(self._on_image_data_changed)
        self._watch_transform(layer)
        self._bind_keys(layer)
        self._keyed_image = layer
        self._set_status(f"image {layer.name!r}: click on an object (T toggles +/-)")

    def _on_image_data_changed(self, event: object = None) -> None:
        self._reset_object()  # embeddings are keyed by pixels: edited slices are re-embedded
        self._set_status("image data changed: the preview was cleared")

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False
        if self._on_viewer_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_viewer_click)
        self.cancel()

    def helper(self, name: str) -> object | None:
        layer = self._helpers.get(name)
        return layer if layer is not None and layer in self.viewer.layers else None

    # --------------------------------------------------------------------------- prompts
    def toggle_point_label(self) -> None:
        """T: new points become negative (or positive again)."""
        self.positive_mode = not self.positive_mode
        points = self.helper(POINTS)
        if points is not None:
            points.feature_defaults = {"positive": self.positive_mode}
        self._update_mode_label()

    def _update_mode_label(self) -> None:
        sign = "positive (+)" if self.positive_mode else "negative (−)"
        self.mode_label.setText(f"new points: {sign}   [T toggles]")

    def current_prompts(self) -> SlicePrompts:
        """The points and box on the current slice, in the image's data pixels (points and
        boxes of a layer placed unlike the image are mapped through world coordinates)."""
        points, boxes = self.helper(POINTS), self.helper(BOXES)
        layout = self.image_layout()
        image, ndim = self.image_layer(), len(layout.labels_shape)

        def pixels(layer: object, coords: np.ndarray) -> np.ndarray:
            return to_image_pixels(coords, layer, image, ndim, self.viewer.dims.point)

        rectangles = []
        if boxes is not None:
            for data, kind in zip(boxes.data, boxes.shape_type, strict=False):
                if kind == "rectangle":
                    rectangles.append(pixels(boxes, data))
        return slice_prompts(
            pixels(points, points.data) if points is not None else np.zeros((0, ndim)),
            _positive_flags(points),
            rectangles,
            self.current_z(),
            layout.spatial_hw,
        )

    def _recolor_points(self) -> None:
        points = self.helper(POINTS)
        if points is None or len(points.data) == 0:
            return
        colors = np.where(_positive_flags(points), POSITIVE, NEGATIVE)
        with points.events.data.blocker():
            points.face_color = list(colors)

    def _on_prompts_changed(self, event: object = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action).lower().endswith("ing"):  # adding…: not done yet
            return
        self._generation += 1
        self._request_preview()  # first: the worker starts while the points are recoloured
        self._recolor_points()

    def clear_prompts(self) -> None:
        """X: remove all points and boxes and the preview."""
        for name in (POINTS, BOXES):
            layer = self.helper(name)
            if layer is not None and len(layer.data):
                layer.data = np.zeros((0, layer.ndim)) if name == POINTS else []
        self._reset_object()
        self._generation += 1

    def _reset_object(self) -> None:
        self.candidates = None
        self.object_masks = {}
        self._commit_pending = False
        self._draw_object()

    # ------------------------------------------------------------------------- model work
    def _embedding_job_parts(self) -> tuple[str, object, bool, int | None]:
        """(model, data, rgb, channel) for a job; also snapshots the zarr cache folder."""
        layer = self.image_layer()
        model, folder = self.model_combo.currentText(), self.cache_edit.text().strip()
        self._cache_dir = folder or None
        return model, layer.data, layer.rgb, self.channel

    def session(self, model: str) -> Session:
        """The core session for `model` (shared predictor, caches and tiling rule)."""
        return Session(model, device=None, cache_dir=self._cache_dir, **self.session_options)

    def _embedding(self, model: str, data: object, rgb: bool, channel: int | None, z: int | None):
        """In a worker: the embedding of slice z (memory → zarr cache → encoder, in core)."""
        return self.session(model).embed(session_image(data, rgb, channel), z)

    def segment(self) -> None:
        """S: compute the preview for the current prompts now."""
        self._generation += 1
        self._request_preview()

    def _request_preview(self) -> None:
        if not self._alive:
            return
        try:
            prompts = self.current_prompts()
        except SamscopeError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return
        if prompts.empty:
            self._reset_object()
            return
        if self._preview_worker is not None:
            self._preview_pending = True  # latest wins: rerun when the running job ends
            return
        model, data, rgb, channel = self._embedding_job_parts()
        z, generation = self.current_z(), self._generation
        image_path = image_path_of(self.image_layer())
        self._busy(
            "segmenting (the first click on a slice computes its embedding)…",
            delay_ms=PREVIEW_BUSY_DELAY_MS,
        )

        def work() -> tuple[int, Candidates]:
            embedding = self._embedding(model, data, rgb, channel, z)
            masks, scores, logits = self.session(model).predict(
                embedding,
                points=prompts.points_xy if len(prompts.points_xy) else None,
                labels=prompts.labels if len(prompts.points_xy) else None,
                box=prompts.box_xyxy,
                multimask=prompts.ambiguous,
            )
            choice = default_choice(masks, scores)
            record = prompted_record(
                self.session(model), data, rgb, channel, z, prompts, masks, choice, image_path
            )
            return generation, Candidates(z, masks, scores, logits, choice, record)

        self._preview_worker = jobs.start_function_job(work, self._on_preview, "segmentation")

    def _on_preview(self, result: object) -> None:
        self._preview_worker = None
        if not self._alive:
            return
        self._idle()
        if self._preview_pending:
            self._preview_pending = False
            self._request_preview()
            return
        if not jobs.report(result):
            self._commit_pending = False
            return
        generation, candidates = result
        if generation != self._generation:  # prompts changed meanwhile (e.g. cleared)
            self._commit_pending = False
            return
        self.candidates = candidates
        self._shown_generation = generation
        self._show_choice()
        self._set_status("preview ready: C commits, N shows the next mask, X clears")
        if self._commit_pending:
            self._commit_pending = False
            self.commit()

    def _show_choice(self) -> None:
        c = self.candidates
        self.object_masks = {c.z: c.masks[c.choice]}
        parts = [f"{'▶' if i == c.choice else ' '}{i + 1}: {s:.2f}" for i, s in enumerate(c.scores)]
        self.mask_label.setText("mask (predicted IoU)  " + "  ".join(parts) + "   [N next]")
        self._draw_object()

    def next_mask(self) -> None:
        """N: show the next of the three candidate masks of an ambiguous click."""
        if self.candidates is None or len(self.candidates.masks) < 2:
            self._set_status("only one candidate mask (several prompts are not ambiguous)")
            return
        self.candidates.choice = (self.candidates.choice + 1) % len(self.candidates.masks)
        self._show_choice()

    def _draw_object(self) -> None:
        preview = self.helper(PREVIEW)
        deleted = preview is None and self.object_masks and self.image_layer() is not None
        if deleted and self._ensure_helpers((PREVIEW,)):  # the object comes back
            return  # _ensure_helpers drew it
        if preview is None:
            if not self.object_masks:
                self.mask_label.setText("no preview")
            return
        data = np.zeros(preview.data.shape, np.uint8)
        for z, mask in self.object_masks.items():
            if z is None:
                data[mask] = 1
            else:
                data[z][mask] = 1
        preview.data = data
        if not self.object_masks:
            self.mask_label.setText("no preview")


def _positive_flags(points: object | None) -> np.ndarray:
    """(N,) bool: the positive/negative flag of each point (all positive for a points layer
    without samscope's "positive" feature, e.g. one the user made)."""
    if points is None:
        return np.zeros(0, dtype=bool)
    if "positive" not in points.features:
        return np.ones(len(points.data), dtype=bool)
    return points.features["positive"].to_numpy(dtype=bool)
