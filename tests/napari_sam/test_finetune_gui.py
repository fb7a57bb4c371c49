"""The Fine-tune widget in a real viewer: real MobileSAM, real nuclei, tiny real training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gui]

# dsb2018_fluo_dev images of 256x256 with 13 and 8 nuclei
STACK_NAMES = ("c043d5ac9dd46605", "d3ce382f190ee247")
TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def nuclei_stack(nuclei_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(3, 256, 256) uint8 images and uint32 instance labels; slice 1 has no labels (it must
    be skipped), slices 0 and 2 are real nuclei images with their ground truth."""
    import tifffile
    from PIL import Image

    folder = nuclei_dir
    images, labels = [], []
    for name in STACK_NAMES:
        with Image.open(folder / "images" / f"{name}.png") as im:
            images.append(np.asarray(im.convert("L")))
        labels.append(tifffile.imread(folder / "labels" / f"{name}.tif").astype(np.uint32))
    images.insert(1, images[0][::-1].copy())
    labels.insert(1, np.zeros_like(labels[0]))
    return np.stack(images), np.stack(labels)


@pytest.fixture
def finetune_gui(make_napari_viewer, mobilesam_checkpoint, qtbot):
    """(viewer, FinetuneWidget) opened through the plugin's manifest."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Fine-tune")
    yield viewer, widget
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT_MS)


def _tiny(widget, out: Path, epochs: int = 1) -> None:
    """Settings of a seconds-long run: decoder only, 2 objects, 1 point round."""
    widget.model_combo.setCurrentText("vit_t")
    widget.trainable_combo.setCurrentText("decoder")
    widget.epochs_spin.setValue(epochs)
    widget.objects_spin.setValue(2)
    widget.point_rounds_spin.setValue(1)
    widget.refine_rounds_spin.setValue(0)
    widget.out_edit.setText(str(out))


def _add_pair(viewer, image, labels):
    viewer.add_image(image, name="nuclei")
    return viewer.add_labels(labels, name="SAM objects")


def _run(widget, qtbot) -> None:
    widget.start()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT_MS)


@pytest.mark.slow
def test_finetune_on_a_committed_stack_writes_a_loadable_model(
    finetune_gui, nuclei_stack, tmp_path, qtbot, errors
):
    from sam_core import load_model
    from sam_core.session import is_loaded
    from samscope_napari.annotator import AnnotatorWidget

    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    layer = _add_pair(viewer, image, labels)
    before = layer.data.copy()
    assert widget.image_combo.currentText() == "nuclei"
    assert widget.labels_combo.currentText() == "SAM objects"
    _tiny(widget, tmp_path / "run")
    widget.first_point_combo.setCurrentText("interior")
    widget.rank_spin.setValue(1.0)
    _run(widget, qtbot)

    assert errors == []
    path = tmp_path / "run" / "model.pth"
    assert widget.model_path == path and path.is_file()
    assert widget.path_edit.text() == str(path)
    assert load_model(path).arch == "vit_t"
    card = widget.card
    assert card["config"]["first_point"] == "interior"
    assert card["config"]["iou_rank_weight"] == 1.0
    assert card["config"]["augment"] is False
    widget.augment_check.setChecked(True)
    assert widget.config().augment is True
    assert [h["epoch"] for h in card["history"]] == [1]
    assert json.loads((tmp_path / "run" / "model.json").read_text())["epochs_done"] == 1
    used = card["data"]["train_images"] + card["data"]["val_images"]
    assert sorted(used) == ["nuclei[z=0]", "nuclei[z=2]"]  # z=1 has no labels
    assert len(card["data"]["val_images"]) == 1
    result = widget.result_label.text()
    assert "before" in result and "after 1 epoch" in result, result
    log = widget.log_box.toPlainText()
    assert "1 labelled image for training, 1 held out for validation" in log
    assert "epoch 1" in log and "(before training)" in log
    assert np.array_equal(layer.data, before)
    # automatic-mask thresholds searched on the validation slice, kept in the card ...
    found = json.loads((tmp_path / "run" / "model.json").read_text())["automatic"]
    assert 0.3 <= found["pred_iou_thresh"] <= 0.9 and "automatic masks:" in log
    # ... and taken up by the Automatic segmentation widget for that model file
    from samscope_napari.automatic_widget import AutomaticWidget

    automatic = AutomaticWidget(viewer)
    automatic.model_combo.setEditText(str(path))
    assert automatic.iou_spin.value() == pytest.approx(found["pred_iou_thresh"])
    assert automatic.stability_spin.value() == pytest.approx(found["stability_score_thresh"])
    assert "fine-tuned model" in automatic.status_label.text()

    widget.use_button.click()
    annotators = [w for w in viewer.window.dock_widgets.values() if isinstance(w, AnnotatorWidget)]
    assert len(annotators) == 1
    assert annotators[0].model_combo.currentText() == str(path)
    assert is_loaded(str(path), device=None)  # the trained weights serve the annotator


@pytest.mark.slow
def test_one_image_cancel_between_steps_then_resume(
    finetune_gui, nuclei_stack, tmp_path, qtbot, errors
):
    """One 2-D image: no validation; Cancel in epoch 2 keeps epoch 1, Start resumes it."""
    from qtpy.QtCore import Qt

    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    layer = _add_pair(viewer, image[0], labels[0])
    before = layer.data.copy()
    _tiny(widget, tmp_path / "run", epochs=2)  # one step per epoch
    widget.start()

    def press_cancel_at_step_2(value) -> None:  # runs in the worker thread, in order
        if value[:2] == ("progress", 2):
            widget._stop.set()  # what Cancel sets

    widget._relay.message.connect(press_cancel_at_step_2, type=Qt.DirectConnection)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT_MS)
    widget._relay.message.disconnect(press_cancel_at_step_2)
    assert "1 labelled image: training without validation" in widget.log_box.toPlainText()
    status = widget.status_label.text()
    assert "cancelled after step 2 of 2; 1 epoch(s) are saved" in status, status
    assert "resume with the same folder" in status
    assert widget.card is None and not widget.use_button.isEnabled()
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1]

    _run(widget, qtbot)  # Start again, Resume ticked
    assert errors == []
    assert "resuming" in widget.log_box.toPlainText()
    card = widget.card
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert card["data"] == {
        "napari_image": "nuclei",
        "napari_labels": "SAM objects",
        "train_images": ["nuclei"],
        "val_images": [],
    }
    assert widget.result_label.text() == "trained 2 epochs; no validation images, so no mIoU"
    assert np.array_equal(layer.data, before)


# -------------------------------------------------------------------- bad input
def _only_error(errors, text: str) -> None:
    assert len(errors) == 1, errors
    assert text in errors[0], errors[0]
    assert "Traceback" not in errors[0]


def test_no_image_or_no_labels_layer(finetune_gui, nuclei_stack, tmp_path, errors):
    viewer, widget = finetune_gui
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.start()
    _only_error(errors, "no image layer")
    viewer.add_image(nuclei_stack[0][0], name="nuclei")
    widget.start()
    assert "no labels layer" in errors[1]
    assert widget._worker is None and not (tmp_path / "run").exists()


def test_labels_of_another_shape(finetune_gui, nuclei_stack, tmp_path, errors):
    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    layer = _add_pair(viewer, image[0], labels[0][:128])
    before = layer.data.copy()
    _tiny(widget, tmp_path / "run")
    widget.start()
    _only_error(errors, "have shape (128, 256) but image 'nuclei' needs labels of shape")
    assert widget._worker is None and np.array_equal(layer.data, before)


def test_labels_without_objects(finetune_gui, nuclei_stack, tmp_path, errors):
    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    _add_pair(viewer, image, np.zeros_like(labels))
    _tiny(widget, tmp_path / "run")
    widget.start()
    _only_error(errors, "have no objects")
    assert widget._worker is None


def test_read_only_output_folder(finetune_gui, nuclei_stack, tmp_path, errors):
    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    _add_pair(viewer, image[0], labels[0])
    if os.geteuid() == 0:  # root writes through permissions: use a read-only file system
        out = Path("/sys/samscope-finetune-test")
    else:
        out = tmp_path / "locked"
        out.mkdir()
        out.chmod(0o555)
    _tiny(widget, out)
    widget.start()
    _only_error(errors, f"cannot write to the output folder {out}")
    assert widget._worker is None


def test_a_file_in_the_output_path(finetune_gui, nuclei_stack, tmp_path, errors):
    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    _add_pair(viewer, image[0], labels[0])
    (tmp_path / "a_file").write_text("x")
    _tiny(widget, tmp_path / "a_file" / "run")
    widget.start()
    _only_error(errors, "cannot write to the output folder")


def test_resuming_a_run_of_another_architecture(
    finetune_gui, nuclei_stack, tmp_path, qtbot, errors
):
    """The folder holds a ViT-B run, the base model is MobileSAM: core's CheckpointError is
    shown as one message and nothing in the folder changes."""
    import torch

    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    layer = _add_pair(viewer, image[0], labels[0])
    before = layer.data.copy()
    out = tmp_path / "vit_b_run"
    out.mkdir()
    card = {"arch": "vit_b", "config": {"trainable": "decoder"}, "history": []}
    torch.save(
        {"optimizer": {}, "epoch": 1, "step": 1, "card_json": json.dumps(card)}, out / "resume.pth"
    )
    torch.save({"mask_decoder.iou_token.weight": torch.zeros(1, 256)}, out / "model.pth")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _tiny(widget, out)
    _run(widget, qtbot)
    _only_error(errors, "holds a vit_b fine-tuning run, but the base model is vit_t")
    assert widget.card is None and not widget.use_button.isEnabled()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert np.array_equal(layer.data, before)


def test_a_base_checkpoint_that_is_not_sam(finetune_gui, nuclei_stack, tmp_path, qtbot, errors):
    import torch

    viewer, widget = finetune_gui
    image, labels = nuclei_stack
    _add_pair(viewer, image[0], labels[0])
    base = tmp_path / "unet.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(8, 1, 3, 3)}, base)
    _tiny(widget, tmp_path / "run")
    widget.model_combo.setCurrentText(str(base))
    _run(widget, qtbot)
    _only_error(errors, "can't tell the architecture of this checkpoint")
    assert not (tmp_path / "run" / "model.pth").exists()


def test_pure_helpers_split_and_cancel_messages():
    from samscope_napari.finetune_inputs import cancel_message, split_note, validation_count

    assert validation_count(1, None) == 0 and validation_count(1, 3) == 0
    assert validation_count(3, None) == 1 and validation_count(10, None) == 2
    assert validation_count(10, 0) == 0
    with pytest.raises(ValueError, match="at most 2"):
        validation_count(3, 3)
    assert "without validation" in split_note(1, 0)
    assert "cancelled after step 5 of 8; 2 epoch(s)" in cancel_message(5, 8, 4, False, "out")
    assert "before epoch 1 was saved" in cancel_message(2, 8, 4, False, "out")
    assert "1 epoch(s)" in cancel_message(2, 8, 4, True, "out")
    assert "before the first training step" in cancel_message(None, 0, 4, True, "out")
