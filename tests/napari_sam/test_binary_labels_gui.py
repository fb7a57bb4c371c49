"""A binary Labels layer (all nuclei under one id) in the Fine-tune widget: refused with a
clear message, or split into its separate blobs when the box is ticked; the layer itself
never changes. Real dsb2018 nuclei (13 in one 256 x 256 image), binarised here."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gui]


@pytest.fixture
def finetune_gui(make_napari_viewer, qtbot):
    """(viewer, FinetuneWidget) opened through the plugin's manifest."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Fine-tune")
    yield viewer, widget
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)


def _binary_pair(viewer, nuclei):
    image, instances = nuclei
    viewer.add_image(image, name="nuclei")
    binary = (instances != 0).astype(np.uint8)  # every nucleus = 1
    return viewer.add_labels(binary, name="SAM objects")


def test_a_binary_labels_layer_is_refused_with_a_clear_message(
    finetune_gui, nuclei, tmp_path, errors
):
    viewer, widget = finetune_gui
    layer = _binary_pair(viewer, nuclei)
    before = layer.data.copy()
    widget.out_edit.setText(str(tmp_path / "run"))
    assert not widget.split_check.isChecked()
    widget.start()
    assert len(errors) == 1, errors
    message = errors[0]
    assert "labels 'SAM objects' is a binary label image" in message, message
    assert "13 separate regions" in message and "one object in 13 pieces" in message
    assert "tick 'split binary labels into objects" in message
    assert "Traceback" not in message
    assert widget.status_label.text() == message
    assert widget._worker is None and not (tmp_path / "run" / "model.pth").exists()
    assert np.array_equal(layer.data, before) and layer.data.dtype == before.dtype


def test_ticking_split_makes_each_blob_one_object_and_leaves_the_layer_alone(finetune_gui, nuclei):
    from samscope_napari.finetune_inputs import labelled_planes

    viewer, widget = finetune_gui
    layer = _binary_pair(viewer, nuclei)
    before = layer.data.copy()
    widget.split_check.setChecked(True)
    assert widget.config().split_binary is True
    image_layer = viewer.layers["nuclei"]
    planes = labelled_planes(image_layer, layer, None, widget.split_check.isChecked())
    ((z, label),) = planes.planes
    assert z is None and label.max() == 13
    assert np.array_equal(label != 0, nuclei[1] != 0)
    assert len(planes.notes) == 1 and "split into 13 objects" in planes.notes[0]
    (sample,) = planes.samples()
    assert sample.n_instances == 13
    assert np.array_equal(layer.data, before)  # the layer is only read
    # instance labels are kept as they are, with no note
    layer.data = nuclei[1].astype(np.uint32)
    planes = labelled_planes(image_layer, layer, None, True)
    assert planes.notes == () and np.array_equal(planes.planes[0][1], nuclei[1])
