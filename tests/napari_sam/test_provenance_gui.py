"""Provenance of the annotator's committed objects in a real viewer (Xvfb) with real MobileSAM:
kept in the Labels layer's metadata, replayed bit for bit, reviewed (class + flags), kept in
step with undo / delete, and saved with the labels through samscope's writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from napari_sam_helpers import interior_point, screenshot, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _largest(gt: np.ndarray, k: int = 2) -> list[int]:
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    return [int(i) for i in ids[np.argsort(-sizes)][:k]]


def test_commit_records_replay_review_and_save(annotator, nuclei, press, qtbot, tmp_path):
    from sam_core.provenance import MaskProvenance
    from sam_core.replay import replay
    from sam_core.series import read_labels_provenance

    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    first, second = _largest(gt)
    points = widget.helper("SAM points")
    points.add([interior_point(gt == first)])
    wait_idle(qtbot, widget)
    press(viewer, "n")  # another of the three candidates: the record must name the one shown
    shown = widget.candidates.choice
    sam_mask = widget.object_masks[None].copy()
    press(viewer, "c")
    wait_idle(qtbot, widget)
    labels = viewer.layers["SAM objects"]
    held = labels.metadata["samscope_provenance"]
    assert list(held) == [1]
    record = MaskProvenance.from_dict(held[1])
    assert record.kind == "prompted" and record.parameters["mask_index"] == shown
    assert record.parameters["multimask_output"] is True
    y, x = interior_point(gt == first)
    assert record.prompts["points_xy"] == [[x, y]] and record.prompts["point_labels"] == [1]
    assert record.model["name"] == "vit_t" and record.model["checkpoint_sha256"]
    # replay regenerates the committed mask bit for bit
    replayed = replay(record, image)
    assert np.array_equal(replayed, sam_mask) and np.array_equal(labels.data == 1, sam_mask)

    # a box prompt, then undo: the record goes with the object and comes back with a redo
    rows, cols = np.nonzero(gt == second)
    box = [[rows.min() - 2, cols.min() - 2], [rows.max() + 2, cols.max() + 2]]
    widget.helper("SAM boxes").add_rectangles(np.array(box, float))
    wait_idle(qtbot, widget)
    press(viewer, "c")
    wait_idle(qtbot, widget)
    assert sorted(labels.metadata["samscope_provenance"]) == [1, 2]
    assert labels.metadata["samscope_provenance"][2]["prompts"]["box_xyxy"] is not None
    press(viewer, "u")
    assert sorted(labels.metadata["samscope_provenance"]) == [1]
    assert not np.any(labels.data == 2)

    # review: class + flags on the selected object, shown in the table and the layer features
    labels.selected_label = 1
    widget.class_combo.setCurrentText("nucleus")
    widget.flag_checks["uncertain"].setChecked(True)
    widget.buttons["Apply to object"].click()
    review = labels.metadata["samscope_provenance"][1]["review"]
    assert review["class"] == "nucleus" and review["flags"] == ["uncertain"]
    assert widget.review_table.rowCount() == 1
    assert widget.review_table.item(0, 2).text() == "nucleus"
    assert list(labels.features["class"]) == ["nucleus"]
    screenshot(viewer, "napari_review")

    # saved through samscope: label TIFF + sidecar with the review
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(tmp_path / "objects.tif"), selected=True, plugin="samscope")
    assert set(map(str, written)) >= {str(tmp_path / "objects.tif")}
    assert np.array_equal(tifffile.imread(tmp_path / "objects.tif"), labels.data)
    back = read_labels_provenance(tmp_path / "objects.tif")
    assert back[1].review["class"] == "nucleus" and back[1].prompts == record.prompts
    assert json.loads((tmp_path / "objects.provenance.json").read_text())["mask_labels"] == [
        {"label": 1}
    ]

    # delete the object (its record goes), U brings both back
    widget.buttons["Delete object"].click()
    assert not np.any(labels.data) and not labels.metadata["samscope_provenance"]
    press(viewer, "u")
    assert np.array_equal(labels.data == 1, sam_mask)
    assert labels.metadata["samscope_provenance"][1]["review"]["class"] == "nucleus"


def test_overwrite_drops_the_record_of_an_erased_object(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    first = _largest(gt, 1)[0]
    for _ in range(2):  # the same nucleus twice, the second with overwrite: object 1 is gone
        widget.helper("SAM points").add([interior_point(gt == first)])
        wait_idle(qtbot, widget)
        press(viewer, "c")
        wait_idle(qtbot, widget)
        widget.overwrite_check.setChecked(True)
    labels = viewer.layers["SAM objects"]
    assert set(np.unique(labels.data)) == {0, 2}
    assert sorted(labels.metadata["samscope_provenance"]) == [2]
    press(viewer, "u")
    assert sorted(labels.metadata["samscope_provenance"]) == [1]
