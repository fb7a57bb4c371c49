"""The annotator's helper layers: SAM points, SAM boxes and SAM preview.

They are made with the image layer's transform (`layer_transforms`), so their data coordinates
are the image's data pixels at any scale/translate, and they follow the image when it is moved.
The user may delete any of them at any time: a notification says how to get it back, and the
next use re-creates it (a click on the image, the S/C/T/N/X/U keys and buttons, a new preview).
A points or shapes layer the user adds under the helper's name is adopted instead, whatever
its transform (its coordinates are mapped through world coordinates).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from sam_core.errors import SamscopeError

from .layer_transforms import apply_transform, transform_kwargs, world_to_image_pixels

POINTS, BOXES, PREVIEW = "SAM points", "SAM boxes", "SAM preview"
NEW_LABELS = "SAM objects"
POSITIVE, NEGATIVE = "limegreen", "red"
HELPERS = (POINTS, BOXES, PREVIEW)
_TRANSFORM_EVENTS = ("scale", "translate", "rotate", "shear", "affine")
_CLICK_SLOP = 5  # canvas pixels a press may move and still count as a click (napari's value)


def layer_key(layer: Any) -> int:
    """Identity of a napari layer. napari hands plugin widgets a new proxy object on every
    access (`PublicOnlyProxy`), so `is` and `id()` of what the viewer returns are not stable;
    this is the id of the layer itself."""
    return id(getattr(layer, "__wrapped__", layer))


class HelperLayersMixin:
    """Helper-layer lifecycle for `AnnotatorWidget` (uses its viewer, image and state)."""

    _helpers: dict[str, Any]
    _adopted: set[int]  # ids of user layers adopted as helpers (they keep their placement)

    # ------------------------------------------------------------------ create / remove
    def _remove_helpers(self) -> None:
        """Remove the helper layers of the previous image (no 'was removed' notification)."""
        for name in HELPERS:
            helper = self._helpers.pop(name, None)
            if helper is not None and helper in self.viewer.layers:
                self.viewer.layers.remove(helper)

    def _helper_kwargs(self) -> dict[str, np.ndarray]:
        """The image's transform for a new helper (raises SamscopeError with a message)."""
        return transform_kwargs(self.image_layer(), len(self.image_layout().labels_shape))

    def _make_helper(self, name: str) -> Any:
        """Create (or adopt a user layer named `name`) and wire one helper layer."""
        layout = self.image_layout()
        ndim = len(layout.labels_shape)
        kwargs = self._helper_kwargs()
        existing = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        kind = {POINTS: napari.layers.Points, BOXES: napari.layers.Shapes}.get(name)
        if kind is not None and isinstance(existing, kind):
            layer = existing  # the user's own prompt layer: read through world coordinates
            self._adopted.add(layer_key(layer))
        elif name == PREVIEW:
            layer = self.viewer.add_labels(
                np.zeros(layout.labels_shape, np.uint8), name=PREVIEW, opacity=0.6, **kwargs
            )
        elif name == BOXES:
            layer = self.viewer.add_shapes(
                ndim=ndim,
                name=BOXES,
                edge_color="yellow",
                face_color="transparent",
                edge_width=2,
                **kwargs,
            )
        else:
            layer = self.viewer.add_points(
                np.zeros((0, ndim)),
                name=POINTS,
                size=max(4, min(layout.spatial_hw) // 50),
                features={"positive": np.zeros(0, dtype=bool)},
                **kwargs,
            )
            layer.mode = "add"
        if name == POINTS:
            if "positive" not in layer.features:
                layer.features = {"positive": np.ones(len(layer.data), dtype=bool)}
            layer.feature_defaults = {"positive": self.positive_mode}
            layer.current_face_color = POSITIVE if self.positive_mode else NEGATIVE
        if name in (POINTS, BOXES):
            layer.events.data.connect(self._on_prompts_changed)
            self._bind_keys(layer)
        self._helpers[name] = layer
        return layer

    def _create_helpers(self) -> None:
        """All three helpers for the current image; the points layer becomes active (also
        after napari has selected a just-added image layer)."""
        for name in (PREVIEW, BOXES, POINTS):
            self._make_helper(name)
        self._activate_points()
        self._later(self._activate_points)

    def _activate_points(self) -> None:
        points = self.helper(POINTS) if self._alive else None
        if points is not None:
            self.viewer.layers.selection.active = points

    def _ensure_helpers(self, names: tuple[str, ...] = HELPERS) -> bool:
        """Re-create helpers the user deleted (keeping the active layer); False, with a message,
        when there is no usable image."""
        missing = [name for name in names if self.helper(name) is None]
        if not missing:
            return True
        if self.image_layer() is None:
            show_error("no image layer: open or add an image first")
            return False
        active = self.viewer.layers.selection.active
        try:
            for name in missing:
                self._make_helper(name)
        except SamscopeError as exc:
            show_error(str(exc))
            self._set_status(str(exc))
            return False
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        if PREVIEW in missing:
            self._draw_object()
        self._set_status(f"re-created {', '.join(map(repr, missing))}")
        return True

    def _guarded(self, slot: Callable[[], None]) -> Callable[[], None]:
        """A key/button slot that first re-creates deleted helpers and never raises our errors
        into Qt (they become one error notification)."""

        def run() -> None:
            if not self._alive:
                return
            try:
                if self.image_layer() is not None and not self._ensure_helpers():
                    return
                slot()
            except SamscopeError as exc:
                show_error(str(exc))
                self._set_status(str(exc))

        return run

    # --------------------------------------------------------------- deleted by the user
    def _on_layer_removed(self, event: object) -> None:
        layer = getattr(event, "value", None)
        for name, helper in list(self._helpers.items()):
            if layer is not None and layer_key(helper) == layer_key(layer):
                del self._helpers[name]
                self._later(lambda n=name: self._say_helper_removed(n))
        if layer is not None and getattr(layer, "name", None) == self.labels_combo.currentText():
            self._later(lambda n=layer.name: self._say_target_removed(n))
        self._refresh_layer_choices()

    def _later(self, func: Callable[[], None]) -> None:
        """Run func after the current event (e.g. once `layers.clear()` has finished); dropped
        when the widget is gone by then (the viewer was closed)."""

        def call() -> None:
            try:
                func()
            except RuntimeError as exc:  # Qt object of a closed widget
                if "has been deleted" not in str(exc):
                    raise

        QTimer.singleShot(0, call)

    def _say_helper_removed(self, name: str) -> None:
        if not self._alive or self.image_layer() is None or self.helper(name) is not None:
            return  # the image went too (or the layer is back): nothing to explain
        how = {
            POINTS: "click on the image to re-create it with that click",
            BOXES: "click on the image or press S to re-create it",
            PREVIEW: "it comes back with the next preview",
        }[name]
        show_info(f"samscope: the {name!r} layer was removed; {how}")

    def _say_target_removed(self, name: str) -> None:
        if not self._alive or name in self.viewer.layers or self.image_layer() is None:
            return
        show_info(
            f"samscope: the target labels {name!r} were removed; the next commit (C) writes "
            f"to a new {NEW_LABELS!r} layer"
        )

    def _on_viewer_click(self, viewer: Any, event: Any) -> Generator[None, None, None]:
        """Viewer mouse callback for clicks that napari's own layers don't turn into points.

        A click (no drag) while a helper is missing re-creates it. It also becomes a point,
        at the image pixel under the cursor (the image's own world → data transform), when
        the active layer does nothing with a click (pan/zoom mode) and either SAM points is
        missing or the active layer is the annotated image itself."""
        image = self.image_layer() if self._alive else None
        if image is None or event.button != 1:
            return
        active = viewer.layers.selection.active
        on_image = active is not None and layer_key(active) == layer_key(image)
        if not on_image and all(self.helper(name) is not None for name in HELPERS):
            return
        mode = "pan_zoom" if active is None else str(getattr(active, "mode", "pan_zoom"))
        ours = active is not None and (
            any(layer_key(active) == layer_key(h) for h in self._helpers.values())
            or getattr(active, "name", None) in (POINTS, BOXES)  # a user layer we adopt
        )
        if mode != "pan_zoom" and not ours:
            return  # the user paints, draws or selects in another layer: leave it alone
        start = np.asarray(event.pos, dtype=np.float64)
        yield
        while event.type == "mouse_move":
            yield
        if np.linalg.norm(np.asarray(event.pos, dtype=np.float64) - start) >= _CLICK_SLOP:
            return  # a drag (pan), not a click
        add_point = mode == "pan_zoom" and (on_image or self.helper(POINTS) is None)
        if self.image_layer() is None or not self._ensure_helpers():
            return
        if add_point:
            self._click_to_point(self.image_layer(), event.position)

    def _click_to_point(self, image: Any, world_position: tuple[float, ...]) -> None:
        layout = self.image_layout()
        pixel = world_to_image_pixels(image, world_position, len(layout.labels_shape))
        hw = np.asarray(layout.spatial_hw, dtype=np.float64)
        if np.any(pixel[-2:] < -0.5) or np.any(pixel[-2:] > hw - 0.5):
            return  # outside the image: only the layer was re-created
        points = self.helper(POINTS)
        if layer_key(points) in self._adopted:  # the user's layer has its own placement
            pixel = np.asarray(points.world_to_data(np.asarray(world_position)), np.float64)
        points.add(pixel[None, :])
        self.viewer.layers.selection.active = points  # further clicks use napari's add mode

    # ---------------------------------------------------------------- image transform
    def _watch_transform(self, image: Any) -> None:
        if layer_key(image) in self._transform_watched:
            return
        self._transform_watched.add(layer_key(image))
        for name in _TRANSFORM_EVENTS:
            getattr(image.events, name).connect(self._on_image_moved)

    def _on_image_moved(self, event: object = None) -> None:
        """The image got another scale/translate/rotation: the helpers follow it."""
        image = self.image_layer()
        if not self._alive or image is None:
            return
        if layer_key(getattr(event, "source", image)) != layer_key(image):
            return
        try:
            kwargs = self._helper_kwargs()
        except SamscopeError as exc:
            show_error(str(exc))
            return
        for name in HELPERS:
            helper = self.helper(name)
            if helper is not None and layer_key(helper) not in self._adopted:
                apply_transform(helper, kwargs)
