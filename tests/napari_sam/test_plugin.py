"""The npe2 manifest, the widgets it contributes, sample data, and the click-to-preview time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from napari_sam_helpers import interior_point, wait_idle


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "samscope"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_sample_data_are_bundled_images():
    from samscope_napari import sample_data

    for func, shape in (
        (sample_data.coins, (303, 384)),
        (sample_data.cell, (660, 550)),
        (sample_data.immunohistochemistry, (512, 512, 3)),
    ):
        [(data, meta, kind)] = func()
        assert data.shape == shape and kind == "image" and meta["name"]


@pytest.mark.gui
def test_widgets_and_samples_open_through_napari(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    from samscope_napari.annotator import AnnotatorWidget
    from samscope_napari.automatic_widget import AutomaticWidget

    _, annotator = viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
    _, automatic = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    assert isinstance(annotator, AnnotatorWidget) and isinstance(automatic, AutomaticWidget)
    viewer.open_sample("samscope", "coins")
    assert viewer.layers["coins"].data.shape == (303, 384)
    assert annotator.image_combo.currentText() == "coins"
    assert automatic.image_combo.currentText() == "coins"


@pytest.mark.gui
@pytest.mark.slow
def test_click_to_preview_latency(annotator, nuclei, qtbot):
    """Measures (prints) the time from adding a point to the preview layer showing its mask,
    with the image already embedded; figures go to docs/napari.md (not asserted)."""
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    points = widget.helper("SAM points")
    preview = widget.helper("SAM preview")
    points.add([interior_point(gt == 1)])  # first click: embeds the image
    wait_idle(qtbot, widget)
    latencies = []
    for obj in [i for i in np.unique(gt) if i > 0][1:6]:
        updates = []
        preview.events.data.connect(lambda e, u=updates: u.append(time.perf_counter()))
        start = time.perf_counter()
        points.add([interior_point(gt == obj)])
        qtbot.waitUntil(lambda u=updates: bool(u), timeout=60_000)
        latencies.append(updates[0] - start)
        wait_idle(qtbot, widget)
        assert preview.data.any()
    print("click-to-preview latency (s):", [round(v, 3) for v in latencies])
    print("median", round(float(np.median(latencies)), 3))
