"""Mask review: queue order, ratings saved at once and reloaded in a new process, two
reviewers kept, bad ratings refused, the five-view picture, the quality report numbers."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from fo_helpers import PLUGIN

pytestmark = pytest.mark.fiftyone

RATE = f"{PLUGIN}/rate_mask"


def _rate(dataset, ref, rating, reviewer):
    import fiftyone.operators as foo

    params = {
        "sample_id": ref.sample_id,
        "label_field": ref.field,
        "detection_id": ref.detection_id,
        "rating": rating,
        "reviewer": reviewer,
        "seconds": 4.5,
    }
    return foo.execute_operator(RATE, dataset=dataset, params=params)


def test_queue_is_lowest_predicted_iou_first(fo_dataset, review_field):
    from samscope_fiftyone.review import review_queue

    queue = review_queue(fo_dataset, review_field)
    assert len(queue) == fo_dataset.count(f"{review_field}.detections")
    ious = [r.predicted_iou for r in queue]
    assert ious == sorted(ious) and ious[0] < ious[-1]
    highest = review_queue(fo_dataset, review_field, order="highest_iou")
    assert highest[0].predicted_iou == ious[-1]
    with pytest.raises(ValueError, match="order must be one of"):
        review_queue(fo_dataset, review_field, order="by-colour")


def test_two_reviewers_kept_and_reloaded_in_a_new_process(fo_dataset, review_field):
    from samscope_fiftyone.review import review_queue

    ref = review_queue(fo_dataset, review_field, reviewer="alice")[0]
    assert _rate(fo_dataset, ref, 3, "alice").result["rating"] == 3
    assert _rate(fo_dataset, ref, 8, "bob").result["reviewer"] == "bob"
    # alice's queue no longer offers the mask she rated; bob's still starts elsewhere
    assert ref.detection_id not in {
        r.detection_id for r in review_queue(fo_dataset, review_field, reviewer="alice")
    }
    script = (
        f"import json, fiftyone as fo; ds = fo.load_dataset({fo_dataset.name!r}); "
        f"s = ds[{ref.sample_id!r}]; "
        f"d = [d for d in s[{review_field!r}].detections if d.id == {ref.detection_id!r}][0]; "
        "print(json.dumps(d['ratings']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    ratings = json.loads(out.stdout.strip().splitlines()[-1])
    mine = [r for r in ratings if r["reviewer"] in ("alice", "bob")]
    assert [(r["reviewer"], r["rating"]) for r in mine[-2:]] == [("alice", 3), ("bob", 8)]
    assert all(r["time"].endswith("+00:00") and r["seconds"] == 4.5 for r in mine)


@pytest.mark.parametrize("bad", [0, 11, 7.5, -3, "x", None, True])
def test_rating_outside_1_to_10_is_refused(fo_dataset, review_field, bad):
    from fiftyone.operators.executor import ExecutionError

    from samscope_fiftyone.review import RatingError, review_queue, save_rating

    ref = review_queue(fo_dataset, review_field)[-1]
    if isinstance(bad, (int, float)) and not isinstance(bad, bool):
        with pytest.raises(ExecutionError, match="whole number from 1 to 10"):
            _rate(fo_dataset, ref, bad, "carol")
    else:  # the operator's form refuses non-numbers itself; the storage call says why
        with pytest.raises(RatingError, match="whole number from 1 to 10"):
            save_rating(fo_dataset, ref, bad, "carol")
    sample = fo_dataset[ref.sample_id]
    det = next(d for d in sample[review_field].detections if d.id == ref.detection_id)
    assert all(r["reviewer"] != "carol" for r in det.get_attribute_value("ratings", None) or [])


def test_unknown_mask_and_missing_reviewer_are_refused(fo_dataset, review_field):
    from samscope_fiftyone.review import MaskRef, RatingError, review_queue, save_rating

    ref = review_queue(fo_dataset, review_field)[0]
    ghost = MaskRef(ref.sample_id, review_field, "0" * 24)
    with pytest.raises(RatingError, match="no detection"):
        save_rating(fo_dataset, ghost, 5, "dave")
    with pytest.raises(RatingError, match="reviewer"):
        save_rating(fo_dataset, ref, 5, "  ")


def test_five_view_picture_shows_mask_and_prompt(fo_dataset, coco_dir, review_field):
    from PIL import Image

    from samscope_fiftyone.review_render import render_detection

    sample = fo_dataset.match_tags("coco").first()
    detection = sample[review_field].detections[0]
    picture = np.asarray(Image.open(io.BytesIO(render_detection(sample, detection, 1000))))
    assert picture.shape[1] == 1000
    rgb = picture[..., :3].astype(int)
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 80)  # the box prompt
    white = (rgb == 255).all(axis=2)
    assert yellow.sum() > 100 and white.sum() > 100


def test_quality_report_numbers(fo_dataset, review_field):
    from samscope_fiftyone.report import histogram_traces, scatter_traces, summarize
    from samscope_fiftyone.review import rating_rows, review_queue, save_rating

    for ref, value in zip(review_queue(fo_dataset, review_field)[:4], (2, 9, 9, 10), strict=True):
        save_rating(fo_dataset, ref, value, "erin")
    rows = [r for r in rating_rows(fo_dataset, [review_field]) if r["reviewer"] == "erin"]
    assert sorted(r["rating"] for r in rows) == [2, 9, 9, 10]
    stats = summarize(rows)[review_field]
    assert stats["n"] == 4 and stats["mean"] == 7.5 and stats["counts"][8] == 2
    assert stats["ci95"] > 0
    (trace,) = histogram_traces({review_field: stats})
    assert trace["x"] == list(range(1, 11)) and sum(trace["y"]) == pytest.approx(100.0)
    (scatter,) = scatter_traces(rows, "predicted_iou")
    assert len(scatter["x"]) == 4 and all(0 < x <= 1.5 for x in scatter["x"])
    assert scatter_traces(rows, "stability_score") == []  # prompted masks have none
