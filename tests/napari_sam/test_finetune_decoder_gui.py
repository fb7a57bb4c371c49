"""The Fine-tune widget training the instance decoder (issue 15) from committed Labels in a
real viewer: real MobileSAM, one real nuclei image, a tiny run that is cancelled after its
first epoch, resumed, and handed to the Automatic segmentation widget."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

TIMEOUT_MS = 240_000


def test_decoder_training_cancels_resumes_and_hands_off(
    make_napari_viewer, shared_predictor, nuclei, tmp_path, qtbot, errors
):
    from qtpy.QtCore import Qt

    from samscope_napari.automatic_widget import AutomaticWidget
    from samscope_napari.finetune_widget import TRAIN_DECODER

    viewer = make_napari_viewer(show=True)
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(gt.astype(np.uint32), name="SAM objects")
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Fine-tune")
    widget.target_combo.setCurrentText(TRAIN_DECODER)
    widget.model_combo.setCurrentText("vit_t")
    widget.epochs_spin.setValue(2)
    widget.decoder_steps_spin.setValue(2)
    out = tmp_path / "run"
    widget.out_edit.setText(str(out))

    lines: list[str] = []

    def on_message(value: tuple) -> None:  # runs in the worker thread (direct connection)
        if value[0] == "log":
            lines.append(value[1])
            if value[1].startswith("epoch   1/"):
                widget._stop.set()  # what Cancel does, at a known moment

    widget._relay.message.connect(on_message, Qt.DirectConnection)
    widget.start()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT_MS)
    widget._relay.message.disconnect(on_message)
    assert "1 epoch(s) are saved" in widget.status_label.text(), widget.status_label.text()
    card = json.loads((out / "model.json").read_text())
    assert card["instance_decoder"]["epochs_done"] == 1
    assert not card["instance_decoder"]["finished"]
    assert not widget.use_automatic_button.isEnabled()

    widget.start()  # Resume is ticked by default: epoch 2
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT_MS)
    assert not errors, errors
    log = widget.log_box.toPlainText()
    assert "resume" in log and "epoch   2/2" in log and "epoch   1/2" not in log
    entry = json.loads((out / "model.json").read_text())["instance_decoder"]
    assert entry["finished"] and entry["epochs_done"] == 2
    assert entry["data"]["napari_labels"] == "SAM objects"
    assert (out / "instance_decoder.pth").is_file() and (out / "model.pth").is_file()
    assert "no validation images" in widget.result_label.text()  # one image: none held out
    assert widget.use_automatic_button.isEnabled()

    widget.use_in_automatic()
    automatic = [w for w in viewer.window.dock_widgets.values() if isinstance(w, AutomaticWidget)]
    assert len(automatic) == 1
    assert automatic[0].model_combo.currentText() == str(out / "model.pth")
    assert automatic[0].mode_combo.currentText() == "decoder"
    assert automatic[0].mode_combo.model().item(1).isEnabled()


def test_decoder_training_refuses_binary_labels_and_keeps_the_layer(
    make_napari_viewer, nuclei, tmp_path, errors
):
    from samscope_napari.finetune_widget import TRAIN_DECODER

    viewer = make_napari_viewer(show=True)
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    binary = (gt > 0).astype(np.uint32)
    layer = viewer.add_labels(binary.copy(), name="SAM objects")
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Fine-tune")
    widget.target_combo.setCurrentText(TRAIN_DECODER)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.start()
    assert widget._worker is None
    assert any("binary" in e for e in errors), errors
    assert np.array_equal(layer.data, binary)
    assert not (tmp_path / "run" / "instance_decoder.pth").exists()
