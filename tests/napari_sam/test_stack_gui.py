"""3-D: propagation through stardist's nuclei volume in the viewer, and a safe close."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import screenshot, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]

OBJ, START = 81, 17  # spans slices 15-25


def test_propagation_in_viewer_reaches_other_slices(annotator, volume, press, qtbot):
    viewer, widget = annotator
    image, gt = volume
    viewer.add_image(image, name="volume")
    assert widget.image_layout().n_slices == image.shape[0]
    viewer.dims.set_current_step(0, START)
    widget.max_slices_spin.setValue(2)
    rows, cols = np.nonzero(gt[START] == OBJ)  # a box: one click is ambiguous on this blur
    y0, x0, y1, x1 = rows.min() - 1, cols.min() - 1, rows.max() + 1, cols.max() + 1
    corners = [[START, y0, x0], [START, y0, x1], [START, y1, x1], [START, y1, x0]]
    widget.helper("SAM boxes").add_rectangles(np.array(corners, float))
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: START in widget.object_masks, timeout=60_000)
    widget.propagate()
    wait_idle(qtbot, widget, timeout=300_000)
    reached = sorted(widget.object_masks)
    print("propagated to", reached, widget.status_label.text())
    assert len(reached) >= 3 and min(reached) < START < max(reached)
    screenshot(viewer, "napari_propagation")
    press(viewer, "c")
    labels = viewer.layers["SAM objects"].data
    assert labels.shape == image.shape
    slices = [z for z in range(len(labels)) if (labels[z] == 1).any()]
    assert slices == reached
    ious = {}
    for z in slices:
        mask, truth = labels[z] == 1, gt[z] == OBJ
        ious[z] = (mask & truth).sum() / (mask | truth).sum()
    print("IoU per slice", {z: round(v, 2) for z, v in ious.items()})
    # the neighbours of the start slice follow the nucleus (its tips, 2 slices away, are tiny)
    assert ious[START - 1] > 0.5 and ious[START + 1] > 0.5


def test_closing_the_viewer_while_embedding_is_safe(make_napari_viewer, shared_predictor, qtbot):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
    rng = np.random.default_rng(1)
    viewer.add_image(rng.random((3, 48, 48)).astype(np.float32), name="noise")
    widget.compute_embedding()
    worker = widget._long_worker
    assert worker is not None
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.layers.clear()
    widget.cancel()
    qtbot.waitUntil(lambda: bool(finished), timeout=120_000)
    assert widget._long_worker is None


def test_closing_the_whole_viewer_mid_propagation_is_safe(
    make_napari_viewer, shared_predictor, volume, qtbot
):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
    image, gt = volume
    viewer.add_image(image, name="volume")
    viewer.dims.set_current_step(0, START)
    rows, cols = np.nonzero(gt[START] == OBJ)
    corners = [[START, rows.min(), cols.min()], [START, rows.min(), cols.max()]]
    corners += [[START, rows.max(), cols.max()], [START, rows.max(), cols.min()]]
    widget.helper("SAM boxes").add_rectangles(np.array(corners, float))
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: START in widget.object_masks, timeout=60_000)
    widget.propagate()
    worker = widget._long_worker
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=120_000)
