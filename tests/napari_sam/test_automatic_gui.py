"""The automatic segmentation widget in a real viewer with real MobileSAM on real nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import screenshot

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _recall(labels: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> float:
    """Fraction of ground-truth objects matched by some label with IoU >= iou."""
    hits = 0
    ids = [i for i in np.unique(gt) if i > 0]
    for obj in ids:
        gt_mask = gt == obj
        found = np.unique(labels[gt_mask])
        best = 0.0
        for lab in found[found > 0]:
            mask = labels == lab
            best = max(best, (mask & gt_mask).sum() / (mask | gt_mask).sum())
        hits += best >= iou
    return hits / len(ids)


def test_automatic_widget_finds_nuclei_and_rethresholds_without_model(
    make_napari_viewer, shared_predictor, nuclei, qtbot
):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 720)
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    widget.points_spin.setValue(16)
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    qtbot.waitUntil(lambda: widget._select_worker is None, timeout=30_000)
    labels = viewer.layers["SAM automatic"].data
    recall = _recall(labels, gt)
    print("objects", widget.n_objects, "recall@0.5", recall)
    assert widget.n_objects >= 5
    assert recall >= 0.5
    screenshot(viewer, "napari_automatic")

    candidates = widget.candidates
    before = widget.n_objects
    widget.min_area_spin.setValue(int(np.percentile(np.bincount(gt.ravel())[1:], 50)))
    qtbot.waitUntil(lambda: widget._select_worker is None, timeout=30_000)
    assert widget.candidates is candidates  # thresholds moved: no new model pass
    assert 0 < widget.n_objects < before
    areas = np.bincount(viewer.layers["SAM automatic"].data.ravel())[1:]
    assert areas[areas > 0].min() >= widget.min_area_spin.value() * 0.5


@pytest.mark.gui
def test_cancel_stops_the_run_and_writes_nothing(
    make_napari_viewer, shared_predictor, nuclei, qtbot
):
    viewer = make_napari_viewer(show=True)
    image, _ = nuclei
    viewer.add_image(image[:128, :128], name="crop")
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    widget.points_spin.setValue(32)
    widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    assert widget.candidates is None
    assert "SAM automatic" not in viewer.layers
    assert widget.status_label.text() == "stopped"


@pytest.mark.gui
@pytest.mark.slow
def test_automatic_on_a_stack_fills_the_current_slice(
    make_napari_viewer, shared_predictor, volume, qtbot
):
    viewer = make_napari_viewer(show=True)
    image, _ = volume
    viewer.add_image(image, name="volume")
    viewer.dims.set_current_step(0, 17)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    widget.points_spin.setValue(8)
    widget.iou_spin.setValue(0.7)
    widget.stability_spin.setValue(0.8)
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    qtbot.waitUntil(lambda: widget._select_worker is None, timeout=30_000)
    labels = viewer.layers["SAM automatic"].data
    assert labels.shape == image.shape
    filled = [z for z in range(len(labels)) if labels[z].any()]
    print("objects", widget.n_objects, "slices", filled)
    assert filled == [17] and widget.n_objects >= 1
