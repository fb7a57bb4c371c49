"""The interactive annotator in a real viewer (Xvfb) with real MobileSAM on real nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import best_iou, interior_point, screenshot, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_clicks_commit_nuclei_matching_ground_truth(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    assert widget.image_layer().name == "nuclei"
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    chosen = ids[np.argsort(-sizes)][:4]
    points = widget.helper("SAM points")
    for obj in chosen:
        points.add([interior_point(gt == obj)])
        wait_idle(qtbot, widget)
        press(viewer, "c")
        wait_idle(qtbot, widget)
    labels = viewer.layers["SAM objects"].data
    committed = [i for i in np.unique(labels) if i > 0]
    assert len(committed) == len(chosen)
    ious = [best_iou(labels == i, gt) for i in committed]
    print("IoU per committed nucleus:", np.round(ious, 3))
    assert min(ious) > 0.6 and np.mean(ious) > 0.75
    screenshot(viewer, "napari_annotator")
