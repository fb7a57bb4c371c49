"""App panels: mask quality review (one mask at a time, the paper's protocol) and the quality
report. They keep only view state; storage and ordering live in `review`, numbers in `report`.
"""

from __future__ import annotations

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .evaluation import detections_fields
from .report import histogram_traces, scatter_traces, summarize, summary_markdown
from .review import ORDERS, QUESTIONS, SCORE_GUIDE, MaskRef, RatingError, review_queue, save_rating
from .review_render import png_data_uri, render_detection

GUIDE_MD = (
    "**Rate the mask** (1 = no object … 10 = pixel-perfect)\n\n"
    + "\n".join(f"{i}. {q}" for i, q in enumerate(QUESTIONS, start=1))
    + "\n\n| score | meaning |\n|---|---|\n"
    + "\n".join(f"| {score} | {text} |" for score, text in SCORE_GUIDE)
)


def _review_fields(dataset) -> list[str]:
    """Detections fields holding samscope masks (with predicted_iou), else all of them."""
    fields = detections_fields(dataset)
    with_iou = [f for f in fields if dataset.count(f"{f}.detections.predicted_iou") > 0]
    return with_iou or fields


class MaskReviewPanel(foo.Panel):
    """One mask at a time in five views, rating buttons 1–10, saved on click."""

    @property
    def config(self):
        return foo.PanelConfig(
            name="mask_review", label="samscope: mask review", icon="grading", surfaces="grid"
        )

    def on_load(self, ctx):
        fields = _review_fields(ctx.dataset)
        # the inputs live in the "settings" row, so their values are under state.settings
        settings = dict(ctx.panel.state.get("settings") or {})
        if settings.get("field") not in fields:
            settings["field"] = fields[0] if fields else None
        if not settings.get("reviewer"):
            user = getattr(ctx, "user", None)
            settings["reviewer"] = getattr(user, "name", None) or "reviewer"
        if settings.get("order") not in ORDERS:
            settings["order"] = "lowest_iou"
        ctx.panel.state.set("settings", settings)
        self._rebuild(ctx)

    @staticmethod
    def _settings(ctx) -> dict:
        return dict(ctx.panel.state.get("settings") or {})

    def _rebuild(self, ctx) -> None:
        settings = self._settings(ctx)
        field, reviewer = settings.get("field"), settings.get("reviewer")
        queue = []
        if field:
            order = settings.get("order") or "lowest_iou"
            queue = review_queue(ctx.view, field, reviewer, order, include_rated=True)
        ctx.panel.state.set("queue", [r.as_dict() for r in queue])
        first_unrated = next((i for i, r in enumerate(queue) if reviewer not in r.rated_by), 0)
        self._show(ctx, first_unrated)

    def _show(self, ctx, index: int) -> None:
        state = ctx.panel.state
        queue = state.get("queue") or []
        if not queue:
            state.set("index", 0)
            state.set("image", None)
            return
        index = max(0, min(index, len(queue) - 1))
        ref = MaskRef(**{**queue[index], "rated_by": tuple(queue[index]["rated_by"])})
        sample = ctx.dataset[ref.sample_id]
        detection = next(d for d in sample[ref.field].detections if d.id == ref.detection_id)
        state.set("index", index)
        state.set("image", png_data_uri(render_detection(sample, detection, width_px=1400)))
        state.set("shown_at", time.time())

    # ------------------------------------------------------------------ callbacks
    def on_settings(self, ctx):
        self._rebuild(ctx)

    def on_rate(self, ctx):
        state = ctx.panel.state
        queue = state.get("queue") or []
        if not queue:
            return
        index = state.get("index") or 0
        item = queue[index]
        ref = MaskRef(item["sample_id"], item["field"], item["detection_id"])
        seconds = time.time() - (state.get("shown_at") or time.time())
        try:
            reviewer = self._settings(ctx).get("reviewer")
            entry = save_rating(ctx.dataset, ref, ctx.params.get("rating"), reviewer, seconds)
        except RatingError as error:
            state.set("message", f"Not saved: {error}")
            ctx.ops.notify(str(error), variant="error")
            return
        item["rated_by"] = [*item["rated_by"], entry["reviewer"]]
        state.set("queue", queue)
        state.set("message", f"Saved rating {entry['rating']} by {entry['reviewer']}.")
        self._show(ctx, index + 1)

    def on_next(self, ctx):
        self._show(ctx, (ctx.panel.state.get("index") or 0) + 1)

    def on_previous(self, ctx):
        self._show(ctx, (ctx.panel.state.get("index") or 0) - 1)

    def on_skip(self, ctx):
        ctx.panel.state.set("message", "Skipped.")
        self.on_next(ctx)

    # ------------------------------------------------------------------ layout
    def render(self, ctx):
        panel = types.Object()
        state = ctx.panel.state
        settings = panel.h_stack("settings", align_x="left", gap=2)
        field_choices = types.DropdownView()
        for name in _review_fields(ctx.dataset):
            field_choices.add_choice(name, label=name)
        settings.str("field", label="Masks field", view=field_choices, on_change=self.on_settings)
        settings.str("reviewer", label="Reviewer", on_change=self.on_settings)
        order_choices = types.DropdownView()
        for name in ORDERS:
            order_choices.add_choice(name, label=name.replace("_", " "))
        settings.str("order", label="Order", view=order_choices, on_change=self.on_settings)

        queue = state.get("queue") or []
        if not queue:
            panel.md("No masks to review in this view. Run samscope automatic or prompted masks.")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        index = state.get("index") or 0
        reviewer = self._settings(ctx).get("reviewer")
        done = sum(reviewer in item["rated_by"] for item in queue)
        item = queue[index]
        iou = item.get("predicted_iou")
        panel.md(
            f"**Mask {index + 1} of {len(queue)}** · rated by {reviewer}: {done}/{len(queue)}"
            + ("" if iou is None else f" · predicted IoU {iou:.3f}")
            + (f" · already rated by: {', '.join(item['rated_by'])}" if item["rated_by"] else ""),
            name="progress",
        )
        panel.img("image", width="100%", alt_text="five review views")
        buttons = panel.h_stack("ratings", align_x="left", gap=1)
        for value in range(1, 11):
            buttons.btn(
                f"rate_{value}",
                label=str(value),
                variant="contained",
                on_click=self.on_rate,
                params={"rating": value},
            )
        navigation = panel.h_stack("navigation", align_x="left", gap=1)
        navigation.btn("previous", label="◀ Previous", on_click=self.on_previous)
        navigation.btn("skip", label="Skip", on_click=self.on_skip)
        navigation.btn("next", label="Next ▶", on_click=self.on_next)
        if state.get("message"):
            panel.md(state.get("message"), name="message")
        panel.md(GUIDE_MD, name="guide")
        return types.Property(panel, view=types.GridView(orientation="vertical"))


class QualityReportPanel(foo.Panel):
    """Rating histogram per field (Fig. 11 style), mean ratings, rating vs model scores."""

    @property
    def config(self):
        return foo.PanelConfig(
            name="quality_report",
            label="samscope: quality report",
            icon="insights",
            surfaces="grid",
        )

    def on_load(self, ctx):
        from .review import rating_rows

        rows = rating_rows(ctx.view, detections_fields(ctx.dataset))
        summary = summarize(rows)
        ctx.panel.state.set("summary_md", summary_markdown(summary))
        ctx.panel.data.set("histogram", histogram_traces(summary))
        ctx.panel.data.set("vs_iou", scatter_traces(rows, "predicted_iou"))
        ctx.panel.data.set("vs_stability", scatter_traces(rows, "stability_score"))

    def on_refresh(self, ctx):
        self.on_load(ctx)

    def render(self, ctx):
        panel = types.Object()
        panel.btn("refresh", label="Refresh", on_click=self.on_refresh)
        panel.md(ctx.panel.state.get("summary_md") or "", name="summary")
        axis = {"title": {"text": "mask rating"}, "dtick": 1}
        panel.plot(
            "histogram",
            layout={
                "title": {"text": "Mask quality ratings"},
                "barmode": "group",
                "xaxis": axis,
                "yaxis": {"title": {"text": "percent of rated masks"}},
            },
        )
        for name, title in (("vs_iou", "predicted IoU"), ("vs_stability", "stability score")):
            panel.plot(
                name,
                layout={
                    "title": {"text": f"Rating vs {title}"},
                    "xaxis": {"title": {"text": title}},
                    "yaxis": {**axis, "range": [0.5, 10.5]},
                },
            )
        return types.Property(panel, view=types.GridView(orientation="vertical"))
