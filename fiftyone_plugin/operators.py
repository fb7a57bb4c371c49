"""The plugin's operators. Each is thin: inputs, delegation, one call into the modules."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from sam_core import ImageError, PromptError

from .automatic import automatic_detections, automatic_generator, instance_settings
from .engine import check_refine_field, export_reviewed, import_labels, refine_detections
from .evaluation import detections_fields, evaluate_masks
from .inference import prompted_detections
from .operator_inputs import (
    add_generator_inputs,
    add_mode_inputs,
    add_model_inputs,
    add_run_inputs,
    progress_reporter,
    run_masks,
    session_for,
    wants_delegation,
)
from .prompts import check_prompt_field
from .review import MaskRef, save_rating


class PromptedMasks(foo.Operator):
    """Masks for the boxes of a Detections field or the points of a Keypoints field."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="prompted_masks",
            label="samscope: masks from boxes or points",
            description="SAM masks for the prompts in a Detections (boxes) or Keypoints field",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        choices = _field_choices(ctx, ("Detections", "Keypoints"))
        inputs.str(
            "prompt_field", label="Prompt field (boxes or points)", view=choices, required=True
        )
        add_model_inputs(inputs)
        add_run_inputs(ctx, inputs, default_field="sam_prompted")
        return types.Property(inputs, view=types.View(label="samscope: prompted masks"))

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)

    def execute(self, ctx):
        return _masks_from_field(
            ctx,
            ("prompt_field", "prompt", check_prompt_field),
            ("sam_prompted", "segment", "prompted masks"),
            lambda session, image, value, _field, mask_dir: prompted_detections(
                session, image, value, mask_dir
            ),
        )


class AutomaticMasks(foo.Operator):
    """Automatic masks (the paper's "segment everything") for the target view."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="automatic_masks",
            label="samscope: automatic masks",
            description="SAM automatic masks (point grid, or a trained instance decoder) with "
            "predicted IoU and stability score",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        add_model_inputs(inputs)
        add_run_inputs(ctx, inputs, default_field="sam_auto")
        add_mode_inputs(inputs)
        add_generator_inputs(inputs)
        return types.Property(inputs, view=types.View(label="samscope: automatic masks"))

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)

    def execute(self, ctx):
        if len(ctx.target_view()) == 0:
            raise ImageError("the view is empty: there are no samples to segment")
        label_field = ctx.params.get("label_field") or "sam_auto"
        session = session_for(ctx)
        instance = instance_settings(session, ctx.params)  # a bad decoder fails here, once
        generator = automatic_generator(session, ctx.params) if instance is None else None

        def segment(image, sample, mask_dir):
            return automatic_detections(session, image, generator, mask_dir, instance=instance)

        return run_masks(ctx, session, label_field, "automatic masks", segment)


class RateMask(foo.Operator):
    """Save one mask quality rating (1–10) on a detection; what the review panel's buttons do."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="rate_mask",
            label="samscope: rate a mask",
            unlisted=True,
            allow_immediate_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        for name in ("sample_id", "label_field", "detection_id", "reviewer"):
            inputs.str(name, required=True)
        inputs.int("rating", required=True, label="Rating (1-10)")
        inputs.float("seconds", label="Seconds spent")
        return types.Property(inputs)

    def execute(self, ctx):
        p = ctx.params
        ref = MaskRef(p["sample_id"], p["label_field"], p["detection_id"])
        return save_rating(ctx.dataset, ref, p.get("rating"), p.get("reviewer"), p.get("seconds"))


class EvaluateMasks(foo.Operator):
    """FiftyOne's own detection evaluation with instance masks against a ground truth field."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_masks",
            label="samscope: evaluate masks",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = detections_fields(ctx.dataset) if ctx.dataset else []
        choices = types.DropdownView()
        for name in fields:
            choices.add_choice(name, label=name)
        inputs.view_target(ctx)
        inputs.str("pred_field", label="Predicted masks field", view=choices, required=True)
        inputs.str("gt_field", label="Ground truth field", view=choices, required=True)
        inputs.str("eval_key", default="sam_eval", label="Evaluation key")
        inputs.float("iou", default=0.5, label="IoU threshold for a match")
        inputs.bool("delegate", default=None, label="Run delegated")
        return types.Property(inputs, view=types.View(label="samscope: evaluate masks"))

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)

    def execute(self, ctx):
        view = ctx.target_view()
        if len(view) == 0:
            raise ImageError("the view is empty: there is nothing to evaluate")
        p = ctx.params
        ctx.set_progress(progress=0.0, label="evaluating masks")
        result = evaluate_masks(
            view, p["pred_field"], p["gt_field"], p.get("eval_key") or "sam_eval", p.get("iou")
        )
        ctx.set_progress(progress=1.0, label="done")
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return result


class RefineMasks(foo.Operator):
    """An existing segmentation (Detections or Segmentation field) refined by SAM: each object's
    box and mask as prompts, one mask each, with provenance (the data engine's semi-automatic
    stage, paper §4)."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="refine_masks",
            label="samscope: refine an existing segmentation",
            description="SAM masks from each object's box + mask of a Detections or "
            "Segmentation field",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        choices = _field_choices(ctx, ("Detections", "Segmentation"))
        inputs.str("source_field", label="Segmentation to refine", view=choices, required=True)
        add_model_inputs(inputs)
        add_run_inputs(ctx, inputs, default_field="sam_refined")
        return types.Property(inputs, view=types.View(label="samscope: refine segmentation"))

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)

    def execute(self, ctx):
        return _masks_from_field(
            ctx,
            ("source_field", "source", check_refine_field),
            ("sam_refined", "refine", "refined masks"),
            lambda session, image, value, field, _mask_dir: refine_detections(
                session, image, value, field
            ),
        )


class ExportReviewed(foo.Operator):
    """Reviewed masks → a training folder (rated >= threshold) and a folder to correct in
    napari (low-rated, unrated or no masks); what ``samscope export-reviewed`` does."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="export_reviewed",
            label="samscope: export reviewed masks for training",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        choices = types.DropdownView()
        for name in detections_fields(ctx.dataset) if ctx.dataset else []:
            choices.add_choice(name, label=name)
        inputs.view_target(ctx)
        inputs.str("field", label="Rated masks field", view=choices, required=True)
        inputs.float("min_rating", default=7, label="Accept masks rated at least (1-10)")
        inputs.str("out_dir", required=True, label="Output folder")
        inputs.bool("unrated_to_correct", default=True, label="Unrated masks: to correct")
        inputs.bool("delegate", default=None, label="Run delegated")
        return types.Property(inputs, view=types.View(label="samscope: export reviewed"))

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)

    def execute(self, ctx):
        p = ctx.params
        unrated = "correct" if p.get("unrated_to_correct", True) else "ignore"
        return export_reviewed(
            ctx.target_view(),
            p["field"],
            p.get("min_rating", 7),
            p["out_dir"],
            unrated=unrated,
            progress=progress_reporter(ctx, "export"),
        )


class ImportLabels(foo.Operator):
    """A folder of labels + provenance (napari's series annotator) → a Detections field."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="import_labels",
            label="samscope: load a folder of labels",
            dynamic=True,
            allow_immediate_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("folder", required=True, label="Folder with images/ and labels/")
        inputs.str("label_field", default="corrected", label="Output field")
        return types.Property(inputs, view=types.View(label="samscope: load labels"))

    def execute(self, ctx):
        result = import_labels(
            ctx.params["folder"], ctx.dataset, ctx.params.get("label_field") or "corrected"
        )
        ctx.ops.reload_dataset()
        return result


def _field_choices(ctx, kinds: tuple[str, ...]):
    """A dropdown of the dataset's fields whose label type (class name) is one of `kinds`."""
    fields = ctx.dataset.get_field_schema(embedded_doc_type=None) if ctx.dataset else {}
    choices = types.DropdownView()
    for name, field in fields.items():
        if getattr(getattr(field, "document_type", None), "__name__", "") in kinds:
            choices.add_choice(name, label=name)
    return choices


def _masks_from_field(ctx, source, output, detections):
    """Masks for the target view from each sample's value of an input field.

    source: (parameter that names the input field, what messages call it, the check of its
    type); output: (default label field, the verb and the run title for messages);
    detections(session, image, field value, field name, mask folder) → the sample's new
    Detections. Raises ImageError for an empty view, PromptError when the output field is the
    input field, and whatever the type check raises."""
    key, noun, check = source
    default_field, verb, title = output
    view = ctx.target_view()
    if len(view) == 0:
        raise ImageError(f"the view is empty: there are no samples to {verb}")
    field = ctx.params[key]
    label_field = ctx.params.get("label_field") or default_field
    if field == label_field:
        raise PromptError(f"the output field must differ from the {noun} field")
    check(view, field)
    session = session_for(ctx)

    def segment(image, sample, mask_dir):
        return detections(session, image, sample[field], field, mask_dir)

    return run_masks(ctx, session, label_field, title, segment)
