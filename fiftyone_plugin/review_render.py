"""The five views of the paper's mask review protocol (appendix E) as one PNG: image, mask
over image, mask alone, zoomed image, zoomed overlay, each with the prompt drawn."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, safe in worker threads
from matplotlib.patches import Rectangle

from sam_core.image_input import as_rgb_uint8_or_float
from sam_core.mask_geometry import bounding_box

MASK_RGB = (0.12, 0.56, 1.0)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) image of any dtype → (H, W, 3) float 0–1 for display, with core's
    intensity rule (`sam_core.image_input.as_rgb_uint8_or_float`: uint8 as is, else the
    1st–99.8th percentile stretch). Data with other than 1, 3 or uint8-RGBA channels shows its
    first three (which channel a mask was made on is not stored on the detection)."""
    image = np.asarray(image)
    channels = None
    rgba = image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8
    if image.ndim == 3 and image.shape[2] not in (1, 3) and not rgba:
        channels = (0, 1, 2) if image.shape[2] >= 3 else 0
    return as_rgb_uint8_or_float(image, channels).astype(np.float32) / 255.0


def zoom_window(
    mask: np.ndarray, box_xyxy: np.ndarray | None, min_size: int = 48
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) px around the mask (and box): its extent plus 25 % each side."""
    height, width = mask.shape
    tight = bounding_box(mask) or (0, 0, width, height)
    x0, y0, x1, y1 = (float(v) for v in tight)
    if box_xyxy is not None:
        x0, y0 = min(x0, box_xyxy[0]), min(y0, box_xyxy[1])
        x1, y1 = max(x1, box_xyxy[2]), max(y1, box_xyxy[3])
    half = max(x1 - x0, y1 - y0, min_size) * 0.75
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        max(0, int(cx - half)),
        max(0, int(cy - half)),
        min(width, int(np.ceil(cx + half))),
        min(height, int(np.ceil(cy + half))),
    )


def _overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(MASK_RGB)
    return out


def _draw_prompt(ax, points_xy, point_labels, box_xyxy, offset=(0.0, 0.0)) -> None:
    dx, dy = offset
    if box_xyxy is not None:
        x0, y0, x1, y1 = box_xyxy
        ax.add_patch(
            Rectangle((x0 - dx, y0 - dy), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5)
        )
    if points_xy is not None and len(points_xy):
        points = np.asarray(points_xy, dtype=float).reshape(-1, 2)
        labels = np.ones(len(points)) if point_labels is None else np.asarray(point_labels)
        for (x, y), label in zip(points, labels, strict=True):
            color = "lime" if label == 1 else "red"
            ax.plot(x - dx, y - dy, "o", ms=7, mfc=color, mec="black", mew=1.0)


def render_review(
    image: np.ndarray,
    mask: np.ndarray,
    points_xy: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box_xyxy: np.ndarray | None = None,
    title: str = "",
    width_px: int = 1500,
) -> bytes:
    """PNG bytes of the five review views side by side.

    image: (H, W) or (H, W, C). mask: (H, W) bool. points_xy: (N, 2) px (x, y) with
    point_labels (N,) 1/0; box_xyxy: (4,) px. Positive points are green, negative red, the
    box yellow.
    """
    rgb = display_rgb(image)
    mask = np.asarray(mask, dtype=bool)
    box = None if box_xyxy is None else np.asarray(box_xyxy, dtype=float)
    overlay = _overlay(rgb, mask)
    x0, y0, x1, y1 = zoom_window(mask, box)
    views = [
        ("image", rgb, (0, 0)),
        ("mask over image", overlay, (0, 0)),
        ("mask", np.repeat(mask[..., None], 3, axis=2).astype(np.float32), (0, 0)),
        ("zoomed image", rgb[y0:y1, x0:x1], (x0, y0)),
        ("zoomed overlay", overlay[y0:y1, x0:x1], (x0, y0)),
    ]
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, width_px / dpi / 4.2), dpi=dpi)
    axes = fig.subplots(1, 5)
    for ax, (name, picture, offset) in zip(axes, views, strict=True):
        ax.imshow(picture, interpolation="nearest")
        _draw_prompt(ax, points_xy, point_labels, box, offset)
        ax.set_xlim(-0.5, picture.shape[1] - 0.5)
        ax.set_ylim(picture.shape[0] - 0.5, -0.5)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for an <img> in the App."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_detection(sample, detection, width_px: int = 1500) -> bytes:
    """The five views for one detection of one FiftyOne sample, with the prompt stored on the
    detection (``prompt_box`` / ``prompt_points`` + ``prompt_labels``, pixels) drawn."""
    from sam_core.image_io import read_image

    from .conversion import detection_to_mask

    image = read_image(sample.filepath)
    mask = detection_to_mask(detection, image.shape[:2])
    box = detection.get_attribute_value("prompt_box", None)
    points = detection.get_attribute_value("prompt_points", None)
    labels = detection.get_attribute_value("prompt_labels", None)
    iou = detection.get_attribute_value("predicted_iou", None)
    title = f"{detection.label or 'mask'}" + ("" if iou is None else f"   predicted IoU {iou:.3f}")
    return render_review(image, mask, points, labels, box, title=title, width_px=width_px)
