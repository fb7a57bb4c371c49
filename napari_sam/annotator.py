"""The "Segment Anything" dock widget: click, preview, commit; propagate through stacks.

Keys (on the viewer and on the prompt layers): S segment now, C commit, T toggle the label
of new points, N next candidate mask, X clear prompts, U undo the last commit.
Model work runs in worker threads (`jobs`); the GUI thread only snapshots prompts and
draws results. Logic without a viewer lives in `annotation`, `prompts`, `image_source`.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QWidget,
)

from sam_core.errors import SamscopeError
from sam_core.tiling import (
    TiledEmbedding,
    TiledPredictor,
    TileLayout,
    compute_tiled_embedding,
    needs_tiling,
)

from . import jobs
from .annotation import UndoStack
from .annotator_commit import NEW_LABELS, POINTS, CommitMixin
from .annotator_stack import StackJobsMixin
from .annotator_ui import build_controls
from .candidates import Candidates, default_choice
from .disk_cache import DISK_CACHES, store_path
from .embedding_store import SHARED_STORE, plane_digest
from .image_source import ImageLayout, image_plane, layout_of
from .models import get_predictor, predictor_lock
from .prompts import SlicePrompts, slice_prompts

BOXES, PREVIEW = "SAM boxes", "SAM preview"
POSITIVE, NEGATIVE = "limegreen", "red"


class AnnotatorWidget(CommitMixin, StackJobsMixin, QWidget):
    """Interactive annotator; construct with the viewer (npe2 passes `napari_viewer`)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.store = SHARED_STORE
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
        self._helpers: dict[str, object] = {}
        self._watched: set[int] = set()
        self._keyed_image: object | None = None
        self._disk_target = None
        # Images with a side above tile_max_side px are embedded in tiles (yx px, + halo).
        self.tile_max_side, self.tile_shape, self.tile_halo = 2048, (1024, 1024), (256, 256)
        self._build_ui()
        self._bind_keys(self.viewer)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
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
                target.bind_key(key, lambda _owner, s=slot: s(), overwrite=True)
            elif key in target.keymap:
                target.bind_key(key, None)

    def _set_status(self, text: str) -> None:
        if self._alive:
            self.status_label.setText(text)

    def _busy(self, text: str, total: int = 0, done: int = 0) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self._set_status(text)

    def _idle(self, text: str | None = None) -> None:
        self.progress.setVisible(False)
        if text:
            self._set_status(text)

    # ------------------------------------------------------------------ layers and image
    def _refresh_layer_choices(self, event: object = None) -> None:
        if not self._alive:
            return
        images = [ly.name for ly in self.viewer.layers if isinstance(ly, napari.layers.Image)]
        labels = [
            ly.name
            for ly in self.viewer.layers
            if isinstance(ly, napari.layers.Labels) and ly.name != PREVIEW
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
        layer = self.image_layer()
        if layer is None or self.image_layout().n_slices is None:
            return None
        return int(self.viewer.dims.current_step[self.viewer.dims.ndim - layer.ndim])

    def _on_image_changed(self, *_: object) -> None:
        if not self._alive:
            return
        self._image_name = self.image_combo.currentText()
        self._reset_object()
        if self._keyed_image is not None:
            self._bind_keys(self._keyed_image, bind=False)
            self._keyed_image = None
        layer = self.image_layer()
        for name in (POINTS, BOXES, PREVIEW):
            helper = self._helpers.pop(name, None)
            if helper is not None and helper in self.viewer.layers:
                self.viewer.layers.remove(helper)
        if layer is None:
            self._set_status("no image layer: open or add an image first")
            return
        try:
            layout = self.image_layout()
        except SamscopeError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return
        if id(layer) not in self._watched:  # an edited image makes the preview stale
            self._watched.add(id(layer))
            layer.events.data.connect(self._on_image_data_changed)
        ndim = len(layout.labels_shape)
        self._helpers[PREVIEW] = self.viewer.add_labels(
            np.zeros(layout.labels_shape, np.uint8), name=PREVIEW, opacity=0.6
        )
        boxes = self.viewer.add_shapes(
            ndim=ndim, name=BOXES, edge_color="yellow", face_color="transparent", edge_width=2
        )
        points = self.viewer.add_points(
            np.zeros((0, ndim)),
            name=POINTS,
            size=max(4, min(layout.spatial_hw) // 50),
            features={"positive": np.zeros(0, dtype=bool)},
        )
        points.feature_defaults = {"positive": self.positive_mode}
        points.current_face_color = POSITIVE if self.positive_mode else NEGATIVE
        points.mode = "add"
        self._helpers[BOXES], self._helpers[POINTS] = boxes, points
        for helper in (points, boxes):
            helper.events.data.connect(self._on_prompts_changed)
            self._bind_keys(helper)
        self._bind_keys(layer)
        self._keyed_image = layer
        self.viewer.layers.selection.active = points
        self._set_status(f"image {layer.name!r}: click on an object (T toggles +/-)")

    def _on_image_data_changed(self, event: object = None) -> None:
        self._reset_object()  # embeddings are keyed by pixels: edited slices are re-embedded
        DISK_CACHES.forget()  # its stores re-hash the data and recompute what changed
        self._set_status("image data changed: the preview was cleared")

    def _on_layer_removed(self, event: object) -> None:
        layer = getattr(event, "value", None)
        for name, helper in list(self._helpers.items()):
            if helper is layer:
                del self._helpers[name]
        self._refresh_layer_choices()

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False
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
        points, boxes = self.helper(POINTS), self.helper(BOXES)
        layout = self.image_layout()
        return slice_prompts(
            points.data if points is not None else np.zeros((0, 2)),
            points.features["positive"].to_numpy() if points is not None else [],
            []
            if boxes is None
            else [
                d for d, t in zip(boxes.data, boxes.shape_type, strict=False) if t == "rectangle"
            ],
            self.current_z(),
            layout.spatial_hw,
        )

    def _recolor_points(self) -> None:
        points = self.helper(POINTS)
        if points is None or len(points.data) == 0:
            return
        colors = np.where(points.features["positive"].to_numpy(dtype=bool), POSITIVE, NEGATIVE)
        with points.events.data.blocker():
            points.face_color = list(colors)

    def _on_prompts_changed(self, event: object = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action).lower().endswith("ing"):  # adding…: not done yet
            return
        self._recolor_points()
        self._generation += 1
        self._request_preview()

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
        """(model, data, rgb, channel) for a job; also snapshots the disk cache target."""
        layer = self.image_layer()
        model, folder = self.model_combo.currentText(), self.cache_edit.text().strip()
        self._disk_target = store_path(folder, layer.name, model, self.channel) if folder else None
        return model, layer.data, layer.rgb, self.channel

    def _embedding(self, model: str, data: object, rgb: bool, channel: int | None, z: int | None):
        """In a worker: the embedding of slice z, computed once and kept in the store."""
        plane = image_plane(data, rgb, z, channel)
        key = (plane_digest(plane), channel, model)
        embedding = self.store.get(key)
        if embedding is None:
            predictor = get_predictor(model)
            with predictor_lock(model):
                if needs_tiling(plane.shape[:2], self.tile_max_side):
                    layout = TileLayout.for_shape(plane.shape[:2], self.tile_shape, self.tile_halo)
                    embedding = compute_tiled_embedding(predictor, plane, layout)
                elif self._disk_target is not None:
                    embedding = DISK_CACHES.embedding(
                        self._disk_target, predictor, data, rgb, channel, z
                    )
                else:
                    embedding = predictor.compute_embedding(plane)
            self.store.put(key, embedding)
        return embedding

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
        self._busy("segmenting (the first click on a slice computes its embedding)…")

        def work() -> tuple[int, Candidates]:
            embedding = self._embedding(model, data, rgb, channel, z)
            predictor = get_predictor(model)
            with predictor_lock(model):
                if isinstance(embedding, TiledEmbedding):  # large image: the prompt's tile
                    target = TiledPredictor(predictor, embedding)
                else:
                    predictor.set_embedding(embedding)
                    target = predictor
                masks, scores, logits = target.predict(
                    points=prompts.points_xy if len(prompts.points_xy) else None,
                    labels=prompts.labels if len(prompts.points_xy) else None,
                    box=prompts.box_xyxy,
                    multimask=prompts.ambiguous,
                )
            return generation, Candidates(z, masks, scores, logits, default_choice(masks, scores))

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
