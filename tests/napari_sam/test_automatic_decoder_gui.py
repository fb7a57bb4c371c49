"""The automatic widget's instance-decoder modes (issue 15) in a real viewer: a tiny decoder
trained once on two other nuclei images (`instance_helpers`), MobileSAM, real nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from instance_helpers import tiny_decoder_run

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, nuclei_dir):
    """Folder with model.pth + model.json (listing instance_decoder.pth), trained once."""
    return tiny_decoder_run(tmp_path_factory.getbasetemp() / "instance_tiny", nuclei_dir)


def _open(make_napari_viewer, image):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    return viewer, widget


def _wait(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    qtbot.waitUntil(lambda: widget._select_worker is None, timeout=60_000)


def test_decoder_mode_finds_nuclei_and_rethresholds_without_the_network(
    make_napari_viewer, decoder_run, nuclei, qtbot
):
    from sam_core.instance.checkpoint import cached_decoder

    image, gt = nuclei
    viewer, widget = _open(make_napari_viewer, image)
    model = str(decoder_run / "model.pth")
    items = widget.mode_combo.model()
    assert not items.item(1).isEnabled()  # vit_t: no decoder beside it
    assert "train" in items.item(1).toolTip()
    widget.model_combo.setCurrentText(model)
    assert items.item(1).isEnabled() and items.item(2).isEnabled()
    widget.mode_combo.setCurrentText("decoder")
    assert widget.decoder_box.isVisibleTo(widget) and not widget.grid_box.isVisibleTo(widget)

    calls: list[int] = []
    network = cached_decoder(decoder_run / "instance_decoder.pth", "cpu").network
    hook = network.register_forward_hook(lambda *_: calls.append(1))
    try:
        widget.run()
        _wait(widget, qtbot)
        labels = np.asarray(viewer.layers["SAM automatic"].data)
        n_gt = len(np.unique(gt)) - 1
        print("objects", widget.n_objects, "ground truth", n_gt, "decoder passes", len(calls))
        assert labels.shape == gt.shape and labels.dtype == np.uint32
        # measured: 13 objects for the 13 nuclei; a decoder that learnt nothing finds 0 or 1
        assert widget.n_objects == labels.max() >= n_gt // 2
        assert (labels > 0).sum() > 0.5 * (gt > 0).sum()
        passes = len(calls)
        assert passes >= 1

        before = widget.n_objects
        widget.decoder_area_spin.setValue(int(np.median(np.bincount(gt.ravel())[1:])))
        _wait(widget, qtbot)
        assert len(calls) == passes  # the watershed alone: no decoder pass
        assert 0 < widget.n_objects < before
        assert "decoder: foreground >" in widget.status_label.text()
    finally:
        hook.remove()


def test_decoder_mode_on_a_stack_fills_the_current_slice(
    make_napari_viewer, decoder_run, nuclei, qtbot
):
    image, _ = nuclei
    stack = np.stack([image[::-1], image])
    viewer, widget = _open(make_napari_viewer, stack)
    viewer.dims.set_current_step(0, 1)
    widget.model_combo.setCurrentText(str(decoder_run / "model.pth"))
    widget.mode_combo.setCurrentText("decoder")
    widget.run()
    _wait(widget, qtbot)
    labels = np.asarray(viewer.layers["SAM automatic"].data)
    assert labels.shape == stack.shape
    assert not labels[0].any() and labels[1].max() == widget.n_objects > 3


def test_decoder_mode_without_a_decoder_is_refused_clearly(
    make_napari_viewer, shared_predictor, nuclei, errors, qtbot
):
    image, _ = nuclei
    viewer, widget = _open(make_napari_viewer, image)
    widget.model_combo.setCurrentText("vit_t")
    widget.mode_combo.setCurrentText("decoder")  # disabled in the list; set programmatically
    widget.run()
    assert widget._worker is None
    assert any("needs an instance decoder" in e and "Fine-tune" in e for e in errors), errors
    assert "SAM automatic" not in viewer.layers
    assert [ly.name for ly in viewer.layers] == ["nuclei"]  # viewer intact
