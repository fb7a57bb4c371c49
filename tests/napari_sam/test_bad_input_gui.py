"""Bad input gives a clear message in the viewer (show_error), never a traceback or lost labels."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import interior_point, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _click_and_wait(widget, qtbot, yx) -> None:
    widget.helper("SAM points").add([yx])
    wait_idle(qtbot, widget)


def test_no_image_layer_and_nothing_to_commit(annotator, press, errors):
    viewer, _widget = annotator
    press(viewer, "s")
    press(viewer, "c")
    assert any("no image layer" in e for e in errors)
    assert not any("Traceback" in e for e in errors)


def test_rgba_16bit_float_and_five_channel_images_segment(annotator, nuclei, qtbot, errors):
    viewer, widget = annotator
    image, gt = nuclei
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    target = gt == ids[np.argmax(sizes)]
    yx = interior_point(target)
    rgba = np.dstack([image, image, image, np.full_like(image, 255)])
    variants = {
        "rgba": (rgba, {"rgb": True}),
        "uint16": (image.astype(np.uint16) * 257, {}),
        "float": (image.astype(np.float32) / 255.0, {}),
    }
    for name, (data, kwargs) in variants.items():
        viewer.add_image(data, name=name, **kwargs)
        widget.image_combo.setCurrentText(name)
        _click_and_wait(widget, qtbot, yx)
        mask = widget.object_masks[None]
        iou = (mask & target).sum() / (mask | target).sum()
        print(name, "IoU", round(iou, 3))
        assert iou > 0.6, name
    five = np.dstack([np.zeros_like(image)] * 2 + [image] + [np.zeros_like(image)] * 2)
    viewer.add_image(five.astype(np.float32), name="five")  # (H, W, 5): channels last
    widget.image_combo.setCurrentText("five")
    assert any("choose a channel" in e for e in errors)
    widget.channel_spin.setValue(2)
    _click_and_wait(widget, qtbot, yx)
    mask = widget.object_masks[None]
    assert (mask & target).sum() / (mask | target).sum() > 0.6


def test_labels_of_another_shape_and_click_outside(annotator, nuclei, press, qtbot, errors):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    other = viewer.add_labels(np.zeros((10, 10), np.uint32), name="small labels")
    other.data[2:4, 2:4] = 5
    widget.labels_combo.setCurrentText("small labels")
    yx = interior_point(gt == 1)
    _click_and_wait(widget, qtbot, yx)
    press(viewer, "c")
    assert any("has shape (10, 10)" in e for e in errors)
    assert other.data.sum() == 5 * 4  # the other labels are untouched
    assert widget.object_masks  # the object is still there to commit elsewhere
    widget.labels_combo.setCurrentIndex(0)  # <new: SAM objects>
    press(viewer, "c")
    committed = viewer.layers["SAM objects"].data
    assert committed.max() == 1
    n_errors = len(errors)
    _click_and_wait(widget, qtbot, (300.0, 20.0))  # below the 256-row image
    assert len(errors) == n_errors + 1 and "outside the image" in errors[-1]
    assert committed.max() == 1 and (committed == 1).sum() > 0  # the commit survived
