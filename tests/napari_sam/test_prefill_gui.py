"""The annotator's semi-automatic stage in a real viewer (Xvfb) with real MobileSAM on real
nuclei: pre-fill with confident automatic masks, refine an existing (binary) segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import best_iou, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_prefill_commits_confident_masks_as_one_undo_step(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    widget.prefill_grid_spin.setValue(8)  # 64 prompts: small and fast
    widget.prefill_iou_spin.setValue(0.9)
    widget.buttons["Pre-fill"].click()
    wait_idle(qtbot, widget)
    labels = viewer.layers["SAM objects"]
    ids = [int(i) for i in np.unique(labels.data) if i]
    held = labels.metadata["samscope_provenance"]
    print("pre-filled objects:", len(ids), widget.status_label.text())
    assert len(ids) >= 3 and sorted(held) == ids
    for i in ids:
        assert held[i]["kind"] == "automatic"
        assert held[i]["parameters"]["pred_iou_thresh"] == pytest.approx(0.9)
        assert held[i]["parameters"]["points_per_side"] == 8
        assert held[i]["parameters"]["predicted_iou"] >= 0.9
    ious = [best_iou(labels.data == i, gt) for i in ids]
    print("pre-fill IoU with the nearest nucleus:", np.round(ious, 2))
    assert np.median(ious) > 0.6
    assert widget.review_table.rowCount() == len(ids)
    press(viewer, "u")  # the whole pre-fill is one step
    assert not np.any(labels.data) and not labels.metadata["samscope_provenance"]


def test_refine_binary_labels_keeps_the_source(annotator, nuclei, qtbot):
    from sam_core.provenance import MaskProvenance
    from sam_core.replay import replay

    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    threshold = (gt > 0).astype(np.uint8)  # binary, like a threshold: all objects = 1
    source = viewer.add_labels(threshold, name="threshold")
    original = source.data.copy()
    widget.labels_combo.setCurrentText("<new: SAM objects>")
    widget.refine_combo.setCurrentText("threshold")
    widget.buttons["Refine labels"].click()
    wait_idle(qtbot, widget)
    labels = viewer.layers["SAM objects"]
    ids = [int(i) for i in np.unique(labels.data) if i]
    held = labels.metadata["samscope_provenance"]
    assert len(ids) >= 3 and sorted(held) == ids
    assert {held[i]["kind"] for i in ids} == {"refined"}
    assert held[ids[0]]["parameters"]["source"]["layer"] == "threshold"
    assert np.array_equal(source.data, original)  # the original layer is untouched
    ious = [best_iou(labels.data == i, gt) for i in ids]
    print("refined objects:", len(ids), "IoU median", round(float(np.median(ious)), 3))
    record = MaskProvenance.from_dict(held[ids[0]])
    replayed = replay(record, image)
    assert record.output["sha256"] and replayed.sum() == record.output["area_px"]


def test_refine_rejects_the_target_as_source(annotator, nuclei, errors):
    viewer, widget = annotator
    image, _ = nuclei
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(np.zeros(image.shape, np.uint32), name="mine")
    widget.labels_combo.setCurrentText("mine")
    widget.refine_combo.setCurrentText("mine")
    widget.buttons["Refine labels"].click()
    assert any("also the target labels" in e for e in errors)
    assert widget._long_worker is None


def test_prefill_cancel_commits_nothing(annotator, nuclei, qtbot, errors):
    viewer, widget = annotator
    image, _ = nuclei
    viewer.add_image(image, name="nuclei")
    widget.prefill_grid_spin.setValue(32)  # 16 decoder batches: Cancel lands long before the end
    widget.buttons["Pre-fill"].click()
    widget.buttons["Cancel"].click()
    wait_idle(qtbot, widget)
    assert "pre-fill cancelled" in widget.status_label.text() and not errors
    assert "SAM objects" not in viewer.layers or not np.any(viewer.layers["SAM objects"].data)
