"""Helpers shared by the operators: input forms, delegation choice, where masks go on disk."""

from __future__ import annotations

import os
from typing import Any

import fiftyone as fo
import fiftyone.operators.types as types

from sam_core import list_models

# Views larger than this run delegated unless the user chooses otherwise.
DELEGATE_ABOVE_SAMPLES = 20


def add_model_inputs(inputs: types.Object) -> None:
    """Model name (registry) or checkpoint path, and the device."""
    names = [m.name for m in list_models()]
    choices = types.AutocompleteView(allow_user_input=True)
    for name in names:
        choices.add_choice(name, label=name)
    inputs.str(
        "model",
        default="vit_t",
        label="Model",
        description="a registry name, or the path of a checkpoint (e.g. a fine-tuned model.pth)",
        view=choices,
    )
    inputs.str("device", default="cpu", label="Device (cpu, cuda, mps)")


def add_run_inputs(ctx, inputs: types.Object, default_field: str) -> None:
    """Target view, output field, overwrite and delegation inputs."""
    inputs.view_target(ctx)
    inputs.str("label_field", default=default_field, label="Output field")
    inputs.bool(
        "overwrite",
        default=False,
        label="Overwrite samples that already have masks in this field",
    )
    inputs.bool(
        "delegate",
        default=None,
        label=f"Run delegated (default: yes for more than {DELEGATE_ABOVE_SAMPLES} samples)",
    )
    inputs.str("mask_dir", default=None, label="Folder for large masks (default: FiftyOne's)")


def add_generator_inputs(inputs: types.Object) -> None:
    """The automatic mask generator's main settings (see `AutomaticMaskGenerator`)."""
    inputs.int("points_per_side", default=32, label="Points per side (grid of prompts)")
    tuned = "blank: the fine-tuned model's searched value (its model.json), else the official"
    inputs.float("pred_iou_thresh", label="Predicted IoU threshold", description=f"{tuned} 0.88")
    inputs.float(
        "stability_score_thresh", label="Stability score threshold", description=f"{tuned} 0.95"
    )
    inputs.float("box_nms_thresh", default=0.7, label="Box NMS IoU threshold")
    inputs.int("crop_n_layers", default=0, label="Crop layers (0 = whole image only)")
    inputs.int("min_mask_region_area", default=0, label="Remove holes/islands below (px)")


def wants_delegation(ctx) -> bool:
    """The user's choice, else delegated for views above `DELEGATE_ABOVE_SAMPLES`."""
    choice = ctx.params.get("delegate")
    if choice is not None:
        return bool(choice)
    return len(ctx.target_view()) > DELEGATE_ABOVE_SAMPLES


def mask_dir_for(ctx, sample: fo.Sample, label_field: str) -> str:
    """Folder for one sample's large masks: ``<mask_dir>/<dataset>/<field>/<sample id>``."""
    root = ctx.params.get("mask_dir") or os.path.join(
        fo.config.default_dataset_dir, "samscope_masks"
    )
    return os.path.join(root, ctx.dataset.name, label_field, sample.id)


def progress_reporter(ctx, what: str):
    """A progress(done, total) callback that forwards to ``ctx.set_progress``."""

    def report(done: int, total: int) -> None:
        ctx.set_progress(progress=done / max(total, 1), label=f"{what}: {done}/{total} samples")

    return report


def finish(ctx, summary: dict[str, Any], label_field: str) -> dict[str, Any]:
    """Reload the App (immediate runs) and return the summary as the operator result."""
    if not ctx.delegated:
        ctx.ops.reload_dataset()
    return {"label_field": label_field, **summary}
