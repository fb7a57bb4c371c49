"""Drawing masks and prompts over an image, to look at what the model did.

    rgb = overlay(image, masks, points_xy=[[120, 80]], labels=[1], box=[10, 10, 200, 150])

The image may have any dtype or channel layout the predictor accepts; it is shown the way the
model sees it (`sam_core.image_input.as_rgb_uint8_or_float`: percentile-normalised unless
uint8). Masks are tinted semi-transparently, one colour each, with a solid outline; positive
points are green discs, negative points red, the box a yellow rectangle.
"""

from __future__ import annotations

import numpy as np
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from .image_input import as_rgb_uint8_or_float

__all__ = ["PALETTE", "overlay"]

# Colour-blind-friendly (Okabe-Ito / tab10-like) colours, cycled over masks.
PALETTE = np.array(
    [
        (86, 180, 233),
        (230, 159, 0),
        (204, 121, 167),
        (0, 114, 178),
        (213, 94, 0),
        (240, 228, 66),
        (0, 158, 115),
        (148, 103, 189),
        (140, 86, 75),
        (127, 127, 127),
    ],
    dtype=np.float32,
)
POSITIVE = (0, 230, 0)
NEGATIVE = (255, 0, 0)
BOX = (255, 220, 0)


def overlay(
    image: np.ndarray,
    masks: np.ndarray | None,
    points_xy: object = None,
    labels: object = None,
    box: object = None,
    alpha: float = 0.45,
    channels: int | list[int] | None = None,
) -> np.ndarray:
    """An (H, W, 3) uint8 picture of ``image`` with ``masks`` and prompts drawn on it.

    image: (H, W) or (H, W, C) array, any real dtype. masks: (H, W) or (N, H, W) boolean
    (anything > 0 counts), or None. points_xy: (K, 2) xy pixels; labels: (K,) 1 positive /
    0 negative (default all positive). box: (4,) or (B, 4) x0, y0, x1, y1 pixels.
    channels: as for `Predictor.set_image`, for images with more than 3 channels.
    """
    rgb = as_rgb_uint8_or_float(image, channels)
    canvas = np.asarray(rgb, dtype=np.float32).copy()
    height, width = canvas.shape[:2]
    if masks is not None:
        stack = np.asarray(masks)
        stack = stack[None] if stack.ndim == 2 else stack.reshape(-1, *stack.shape[-2:])
        if stack.shape[-2:] != (height, width):
            raise ValueError(f"masks of shape {stack.shape[-2:]} don't fit image {height, width}")
        for i, mask in enumerate(stack > 0):
            colour = PALETTE[i % len(PALETTE)]
            canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * colour
            canvas[find_boundaries(mask, mode="inner")] = colour
    out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    thickness = max(1, round(max(height, width) / 400))
    if box is not None:
        for x0, y0, x1, y1 in np.asarray(box, dtype=np.float64).reshape(-1, 4):
            _draw_box(out, (x0, y0, x1, y1), BOX, thickness)
    if points_xy is not None:
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        lbl = np.ones(len(pts), int) if labels is None else np.asarray(labels).reshape(-1)
        radius = max(3.0, max(height, width) / 120)
        for (x, y), label in zip(pts, lbl, strict=True):
            _draw_point(out, x, y, POSITIVE if label else NEGATIVE, radius)
    return out


def _draw_box(out: np.ndarray, xyxy: tuple[float, ...], colour, thickness: int) -> None:
    """Outline the box's pixels, `thickness` pixels inwards; parts outside are clipped."""
    height, width = out.shape[:2]
    x0, y0, x1, y1 = (round(v) for v in xyxy)
    left, right = max(x0, 0), min(x1, width - 1)
    top, bottom = max(y0, 0), min(y1, height - 1)
    if left > right or top > bottom:
        return
    t = thickness
    if 0 <= y0 < height:
        out[y0 : y0 + t, left : right + 1] = colour
    if 0 <= y1 < height:
        out[max(y1 - t + 1, 0) : y1 + 1, left : right + 1] = colour
    if 0 <= x0 < width:
        out[top : bottom + 1, x0 : x0 + t] = colour
    if 0 <= x1 < width:
        out[top : bottom + 1, max(x1 - t + 1, 0) : x1 + 1] = colour


def _draw_point(out: np.ndarray, x: float, y: float, colour, radius: float) -> None:
    shape = out.shape[:2]
    rr, cc = disk((y, x), radius + 1.5, shape=shape)
    out[rr, cc] = (255, 255, 255)  # a white rim keeps the dot visible on any background
    rr, cc = disk((y, x), radius, shape=shape)
    out[rr, cc] = colour
