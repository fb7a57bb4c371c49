"""The review and report panels, driven through FiftyOne's real ExecutionContext the way the
App calls them (panel id + state in the request; button params in ctx.params)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fiftyone


def _panel_ctx(dataset, state: dict, **params):
    from fiftyone.operators.executor import ExecutionContext, Executor

    request = {
        "dataset_name": dataset.name,
        "view": [],
        "params": {"panel_id": "test-panel", "panel_state": state, **params},
    }
    return ExecutionContext(request_params=request, executor=Executor())


def test_review_panel_load_rate_navigate(fo_dataset, review_field):
    from samscope_fiftyone.panels import MaskReviewPanel

    panel = MaskReviewPanel()
    state: dict = {"settings": {"field": review_field, "reviewer": "frank"}}
    ctx = _panel_ctx(fo_dataset, state)
    panel.on_load(ctx)
    queue = ctx.panel.state.get("queue")
    assert len(queue) == fo_dataset.count(f"{review_field}.detections")
    assert [q["predicted_iou"] for q in queue] == sorted(q["predicted_iou"] for q in queue)
    assert ctx.panel.state.get("image").startswith("data:image/png;base64,")
    assert ctx.panel.state.get("index") == 0
    rendered = panel.render(ctx).to_json()
    assert "rate_10" in str(rendered) and "Does the mask have a clean boundary?" in str(rendered)

    first = queue[0]
    ctx = _panel_ctx(fo_dataset, ctx.panel_state, rating=6)
    panel.on_rate(ctx)
    assert ctx.panel.state.get("index") == 1
    assert "Saved rating 6 by frank" in ctx.panel.state.get("message")
    sample = fo_dataset[first["sample_id"]]
    det = next(d for d in sample[review_field].detections if d.id == first["detection_id"])
    assert [r["rating"] for r in det["ratings"] if r["reviewer"] == "frank"] == [6]

    ctx = _panel_ctx(fo_dataset, ctx.panel_state)
    panel.on_skip(ctx)
    assert ctx.panel.state.get("index") == 2
    panel.on_previous(ctx)
    assert ctx.panel.state.get("index") == 1

    ctx = _panel_ctx(fo_dataset, ctx.panel_state, rating=12)
    panel.on_rate(ctx)
    assert "whole number from 1 to 10" in ctx.panel.state.get("message")
    assert ctx.panel.state.get("index") == 1  # stays on the mask

    # reopening starts at frank's first unrated mask
    ctx = _panel_ctx(fo_dataset, {"settings": {"field": review_field, "reviewer": "frank"}})
    panel.on_load(ctx)
    assert ctx.panel.state.get("index") == 1


def test_report_panel_plots(fo_dataset, review_field):
    from samscope_fiftyone.panels import QualityReportPanel
    from samscope_fiftyone.review import review_queue, save_rating

    save_rating(fo_dataset, review_queue(fo_dataset, review_field)[0], 5, "gina")
    ctx = _panel_ctx(fo_dataset, {})
    panel = QualityReportPanel()
    panel.on_load(ctx)
    assert review_field in ctx.panel.state.get("summary_md")
    histogram = ctx.panel.data._data["histogram"]  # write-only in the API
    assert any(trace["name"].startswith(review_field) for trace in histogram)
    assert ctx.panel.data._data["vs_iou"]
    assert "histogram" in str(panel.render(ctx).to_json())
