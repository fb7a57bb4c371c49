"""Helpers for the napari plugin tests (imported by the test modules)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "images"


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) of the interior-most pixel of a (H, W) bool mask (distance transform)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(y), float(x)


def wait_idle(qtbot, widget, timeout: float = 120_000) -> None:
    """Until no preview or long job runs (and no preview is pending)."""
    qtbot.waitUntil(
        lambda: (
            widget._preview_worker is None
            and widget._long_worker is None
            and not widget._preview_pending
        ),
        timeout=timeout,
    )


def best_iou(mask: np.ndarray, gt_labels: np.ndarray) -> float:
    """IoU of `mask` with the ground-truth object it overlaps most."""
    ids, counts = np.unique(gt_labels[mask], return_counts=True)
    counts, ids = counts[ids > 0], ids[ids > 0]
    if not len(ids):
        return 0.0
    gt = gt_labels == ids[np.argmax(counts)]
    return float((gt & mask).sum() / (gt | mask).sum())


def screenshot(viewer, name: str) -> Path:
    """Window grab (UI included) into <folder>/<name>.png: docs/images only when
    SAMSCOPE_UPDATE_SCREENSHOTS=1, else a temporary folder (tests leave the tree clean)."""
    import os
    import tempfile

    update = os.environ.get("SAMSCOPE_UPDATE_SCREENSHOTS") == "1"
    folder = DOCS_IMAGES if update else Path(tempfile.gettempdir()) / "samscope-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # let the docked widget settle the canvas size first
    viewer.reset_view()
    QApplication.processEvents()
    viewer.window.screenshot(str(path), canvas_only=False)
    return path


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def click_world(viewer, qtbot, world_yx) -> None:
    """A real left click (Qt press + release) on the canvas at a world position (…, y, x) of
    the displayed plane: napari maps the canvas pixel back to world coordinates itself."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QApplication

    for _ in range(3):  # let the docked widgets settle the canvas size first
        QApplication.processEvents()
        qtbot.wait(30)
    canvas = viewer.window._qt_viewer.canvas
    to_canvas = canvas.view.transform * canvas.view.scene.transform
    x, y = to_canvas.map([float(world_yx[-1]), float(world_yx[-2])])[:2]
    qtbot.mouseClick(canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
    QApplication.processEvents()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape (1.0 for two empty masks)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
