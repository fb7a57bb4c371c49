"""Helpers shared by the operators: input forms, delegation choice, where masks go on disk,
and the run of a mask operator over its view."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import fiftyone as fo
import fiftyone.operators.types as types

from sam_core import list_models
from sam_core.session import Session, SessionImage

from .inference import NORMALIZATIONS, checked_normalization, run_over_view, sample_image

Segment = Callable[[SessionImage, fo.Sample, str], fo.Detections]

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
    inputs.int(
        "channel",
        label="Channel",
        description="for images with more channels than gray/RGB: the one the model sees "
        "(blank: gray and RGB images as stored)",
    )
    normalizations = types.DropdownView()
    for name in NORMALIZATIONS:
        normalizations.add_choice(name, label=name)
    inputs.enum(
        "normalization",
        list(NORMALIZATIONS),
        default="auto",
        label="Intensity normalisation (non-8-bit images)",
        description="auto: 8-bit as stored, other depths 1st-99.8th percentile to 0-255",
        view=normalizations,
    )


def session_for(ctx) -> Session:
    """The core session for the operator's model and device (predictor and embeddings are
    shared by every session of the process)."""
    return Session(ctx.params.get("model") or "vit_t", ctx.params.get("device") or "cpu")


def image_settings(ctx) -> dict[str, Any]:
    """How the operator asks the session to read each sample: channel and normalisation."""
    normalization = checked_normalization(ctx.params.get("normalization") or "auto")
    return {"channels": ctx.params.get("channel"), "normalization": normalization}


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


def add_mode_inputs(inputs: types.Object) -> None:
    """The automatic-masks mode (grid / decoder / decoder+prompts) and the decoder's settings
    (see `samscope_fiftyone.automatic.instance_settings`)."""
    from .automatic import AUTOMATIC_MODES

    modes = types.RadioGroup()
    for mode in AUTOMATIC_MODES:
        modes.add_choice(mode, label=mode)
    inputs.enum(
        "mode",
        list(AUTOMATIC_MODES),
        default="grid",
        label="Mode",
        description="grid: SAM's point grid; decoder: a trained instance decoder + watershed "
        "(fast, for nuclei and cells; needs a decoder beside the model, see `samscope "
        "train-instance`); decoder+prompts: its objects as prompts for SAM's mask decoder",
        view=modes,
    )
    inputs.str(
        "decoder",
        label="Instance decoder file (decoder modes)",
        description="blank: the instance_decoder.pth listed in the model.json beside the model",
    )
    tuned = "blank: the decoder's tuned value"
    inputs.float("decoder_foreground", label="Decoder: foreground threshold", description=tuned)
    inputs.float("decoder_centre", label="Decoder: centre (seed) threshold", description=tuned)
    inputs.float("decoder_boundary", label="Decoder: boundary (seed) threshold", description=tuned)
    inputs.int("decoder_min_area", label="Decoder: min object area (px)", description=tuned)
    prompts = types.DropdownView()
    for kind in ("point", "box"):
        prompts.add_choice(kind, label=kind)
    inputs.enum(
        "prompt",
        ["point", "box"],
        default="point",
        label="decoder+prompts: prompt per object",
        view=prompts,
    )


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


def run_masks(ctx, session: Session, label_field: str, what: str, segment: Segment) -> dict:
    """Store ``segment(image, sample, mask_dir)`` in `label_field` for each sample of the
    target view, each image read through `session` with the operator's channel and
    normalisation; returns the run summary (see `run_over_view`)."""
    reading = image_settings(ctx)

    def make_labels(sample: fo.Sample) -> fo.Detections:
        image = sample_image(session, sample, **reading)
        return segment(image, sample, mask_dir_for(ctx, sample, label_field))

    summary = run_over_view(
        ctx.target_view(),
        label_field,
        make_labels,
        overwrite=bool(ctx.params.get("overwrite", False)),
        progress=progress_reporter(ctx, what),
    )
    return finish(ctx, summary.as_dict(), label_field)
