"""Prompted masks operator: boxes and clicks from fields, immediate and delegated."""

from __future__ import annotations

import numpy as np
import pytest
from fo_helpers import PLUGIN, run_delegated

pytestmark = pytest.mark.fiftyone

URI = f"{PLUGIN}/prompted_masks"


def _mean_iou_vs_gt(dataset, field: str, prompt_field: str, tag: str) -> tuple[float, int]:
    """Mean IoU of each mask in `field` with the GT object its prompt came from."""
    from samscope_fiftyone.conversion import detection_to_mask

    ious = []
    for sample in dataset.match_tags(tag):
        hw = (sample.metadata.height, sample.metadata.width)
        gt = {d.id: d for d in sample.ground_truth.detections}
        prompts = sample[prompt_field]
        prompt_gt = {p.id: p["gt_id"] for p in getattr(prompts, prompts._LABEL_LIST_FIELD)}
        for det in sample[field].detections:
            pred = detection_to_mask(det, hw)
            true = detection_to_mask(gt[prompt_gt[det["prompt_id"]]], hw)
            ious.append((pred & true).sum() / (pred | true).sum())
    return float(np.mean(ious)), len(ious)


def test_box_prompts_immediate_match_ground_truth(fo_dataset, coco_dir, plugin_ready):
    import fiftyone.operators as foo

    result = foo.execute_operator(
        URI,
        dataset=fo_dataset,
        params={"prompt_field": "boxes", "label_field": "sam_boxes", "delegate": False},
    )
    assert result.error is None, result.error
    assert result.result["processed"] == len(fo_dataset) and result.result["failed"] == 0
    fo_dataset.reload()
    n_gt = fo_dataset.count("ground_truth.detections")
    assert fo_dataset.count("sam_boxes.detections") == n_gt
    ious = fo_dataset.values("sam_boxes.detections.predicted_iou", unwind=True)
    assert all(0.0 < v <= 1.5 for v in ious)
    # measured with MobileSAM: mean IoU 0.88 (20 nuclei), 0.94 (7 COCO objects); floors below
    nuclei_iou, n = _mean_iou_vs_gt(fo_dataset, "sam_boxes", "boxes", "nuclei")
    assert n == 20 and nuclei_iou > 0.8, nuclei_iou
    coco_iou, _ = _mean_iou_vs_gt(fo_dataset, "sam_boxes", "boxes", "coco")
    assert coco_iou > 0.8, coco_iou


def test_click_prompts_delegated_then_rerun_skips(fo_dataset, plugin_ready):
    import fiftyone.operators as foo

    params = {"prompt_field": "clicks", "label_field": "sam_clicks"}
    doc = run_delegated(URI, fo_dataset, params)
    assert doc.run_state == "completed", doc.result
    assert doc.result.result["processed"] == len(fo_dataset)
    fo_dataset.reload()
    # measured: mean IoU 0.88 on the 20 nuclei from one interior click (0.64 on the 7 COCO
    # objects, where one click is ambiguous, as the paper notes); floor below the nuclei figure
    nuclei_iou, n = _mean_iou_vs_gt(fo_dataset, "sam_clicks", "clicks", "nuclei")
    assert n == 20 and nuclei_iou > 0.8, nuclei_iou
    det = fo_dataset.first()["sam_clicks"].detections[0]
    assert det["prompt_type"] == "points" and det["prompt_labels"] == [1]

    again = foo.execute_operator(URI, dataset=fo_dataset, params={**params, "delegate": False})
    assert again.error is None, again.error
    assert again.result["skipped"] == len(fo_dataset) and again.result["processed"] == 0


def test_wrong_prompt_field_type_is_a_clear_error(fo_dataset, plugin_ready):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    if "note" not in fo_dataset.get_field_schema():
        fo_dataset.add_sample_field("note", fo.StringField)
    with pytest.raises(ExecutionError, match=r"'note' is a StringField .*Detections \(boxes\)"):
        foo.execute_operator(URI, dataset=fo_dataset, params={"prompt_field": "note"})
    with pytest.raises(ExecutionError, match="'nope' does not exist"):
        foo.execute_operator(URI, dataset=fo_dataset, params={"prompt_field": "nope"})
    assert "sam_prompted" not in fo_dataset.get_field_schema()


def test_empty_view_is_a_clear_error(fo_dataset, plugin_ready):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    empty = fo_dataset.match_tags("no-such-tag")
    with pytest.raises(ExecutionError, match="the view is empty"):
        foo.execute_operator(URI, dataset=fo_dataset, view=empty, params={"prompt_field": "boxes"})
