"""Evaluate masks operator: FiftyOne's evaluate_detections(use_masks=True), both ways."""

from __future__ import annotations

import pytest
from fo_helpers import PLUGIN, run_delegated

pytestmark = pytest.mark.fiftyone

URI = f"{PLUGIN}/evaluate_masks"


def test_evaluate_immediate_and_delegated(fo_dataset, review_field):
    import fiftyone.operators as foo

    nuclei = fo_dataset.match_tags("nuclei")
    params = {"pred_field": review_field, "gt_field": "ground_truth", "eval_key": "sam_nuclei"}
    result = foo.execute_operator(
        URI, dataset=fo_dataset, view=nuclei, params={**params, "delegate": False}
    ).result
    # measured with GT-box prompts on the 3 nuclei images: precision = recall = 1.0 at IoU 0.5,
    # mAP (COCO IoU sweep) 0.78; floors below
    assert result["precision"] > 0.9 and result["recall"] > 0.9, result
    assert result["mAP"] > 0.65, result
    assert result["tp"] + result["fn"] == nuclei.count("ground_truth.detections")
    fo_dataset.reload()
    assert "sam_nuclei" in fo_dataset.list_evaluations()
    dets = nuclei.values(f"{review_field}.detections", unwind=True)
    assert {d["sam_nuclei"] for d in dets} <= {"tp", "fp"} and any(
        d["sam_nuclei"] == "tp" and d["sam_nuclei_iou"] > 0.5 for d in dets
    )

    doc = run_delegated(URI, fo_dataset, {**params, "eval_key": "sam_all"})
    assert doc.run_state == "completed", doc.result
    assert doc.result.result["tp"] > 0 and 0 < doc.result.result["mAP"] <= 1
    fo_dataset.reload()
    assert "sam_all" in fo_dataset.list_evaluations()


def test_evaluate_rejects_non_detection_fields(fo_dataset, review_field):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="'clicks' is not a Detections field"):
        foo.execute_operator(
            URI,
            dataset=fo_dataset,
            params={"pred_field": "clicks", "gt_field": "ground_truth", "delegate": False},
        )
