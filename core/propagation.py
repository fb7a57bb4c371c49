"""Propagate one object through a stack of slices (3-D volumes, time series).

The mask of the object on slice z gives the prompts for slice z ± 1: its bounding box, a
positive point at the interior-most pixel of each of its largest parts (distance transform),
and its low-res logits as a mask prompt. Propagation goes up and down from the start slice
and stops in a direction when the mask vanishes, stops looking like the previous one (IoU
below a threshold) or, when the image slices are given, loses its contrast against a thin ring
around it (a dark gap between objects stacked in z): that is where the object ends. Objects
that touch a neighbour in z without a gap can be followed into the neighbour; cap the number
of slices (`max_steps`) or edit the result.

    result = propagate(predictor, embedding_for, start_index=12, start_mask=mask, n_slices=30)
    result.masks            # {slice index: (H, W) bool}, the start slice included

`embedding_for(z)` returns the `ImageEmbedding` of slice z; the caller decides where it comes
from (computed now, an in-memory cache, a zarr cache). The predictor's current image changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .embedding import ImageEmbedding
from .errors import PromptError
from .mask_geometry import bounding_box, interior_points, mask_iou
from .predictor import Predictor

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MaskPrompts:
    """Prompts that re-find an object given its mask (all in pixels, xy order).

    box_xyxy: (4,) float64 x0, y0, x1, y1 of the mask's bounding box (pixel centres).
    points_xy: (N, 2) float64 positive points at the interior-most pixels.
    labels: (N,) int64, all 1.
    """

    box_xyxy: np.ndarray
    points_xy: np.ndarray
    labels: np.ndarray


def prompts_from_mask(mask: np.ndarray, n_points: int = 1) -> MaskPrompts | None:
    """Box + interior points of `mask` ((H, W) bool); None if the mask is empty."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise PromptError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    bounds = bounding_box(mask)
    if bounds is None:
        return None
    # pixel edges (not centres): a one-pixel-wide object still gets x0 < x1
    box = np.array(bounds, dtype=np.float64) - 0.5
    points = interior_points(mask, n_points)
    return MaskPrompts(box, points, np.ones(len(points), dtype=np.int64))


def mask_contrast(image: np.ndarray, mask: np.ndarray, ring_px: int = 3) -> float:
    """Mean intensity inside `mask` minus the mean in a ring `ring_px` pixels wide around it.

    image: (H, W) or (H, W, C) (channels averaged); mask: (H, W) bool. 0.0 for an empty mask
    or an empty ring (mask covering the image).
    """
    plane = np.asarray(image, dtype=np.float64)
    if plane.ndim == 3:
        plane = plane.mean(axis=-1)
    ring = ndimage.binary_dilation(mask, iterations=ring_px) & ~mask
    if not mask.any() or not ring.any():
        return 0.0
    return float(plane[mask].mean() - plane[ring].mean())


@dataclass
class PropagationResult:
    """masks: {slice index: (H, W) bool}; scores: {slice index: predicted IoU};
    stop_reasons: {+1 / -1: why propagation stopped in that direction}."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    stop_reasons: dict[int, str] = field(default_factory=dict)

    @property
    def indices(self) -> list[int]:
        return sorted(self.masks)


@dataclass(frozen=True)
class SliceStep:
    """One propagation step: the slice, its mask (None when propagation stopped there)."""

    index: int
    direction: int
    mask: np.ndarray | None
    score: float
    stop_reason: str | None = None


def iter_propagation(
    predictor: Predictor,
    embedding_for: Callable[[int], ImageEmbedding],
    start_index: int,
    start_mask: np.ndarray,
    n_slices: int,
    start_logits: np.ndarray | None = None,
    min_iou: float = 0.5,
    min_area: int = 10,
    n_points: int = 1,
    use_mask_prompt: bool = True,
    directions: tuple[int, ...] = (1, -1),
    slice_for: Callable[[int], np.ndarray] | None = None,
    min_contrast: float = 0.5,
    max_steps: int | None = None,
) -> Iterator[SliceStep]:
    """Yield one `SliceStep` per slice visited, going up from the start slice, then down.

    start_mask: (H, W) bool on slice `start_index`; start_logits: its (256, 256) low-res
    logits if known (used as mask prompt for the first neighbours). A step whose mask is
    smaller than `min_area` pixels, or whose IoU with the previous slice's mask is below
    `min_iou`, ends that direction (it is yielded with mask None and a stop_reason).
    slice_for(z) -> (H, W[, C]) image of slice z: when given, a step whose `mask_contrast` is
    below `min_contrast` times the start slice's contrast ends the direction too.
    max_steps: at most this many slices in each direction (None: to the end of the stack).
    """
    start_mask = np.asarray(start_mask, dtype=bool)
    if not 0 <= start_index < n_slices:
        raise PromptError(f"start slice {start_index} is outside the stack of {n_slices} slices")
    if start_mask.sum() < max(1, min_area):
        raise PromptError(
            f"the object on slice {start_index} has {int(start_mask.sum())} pixels; "
            f"need at least {max(1, min_area)} to propagate"
        )
    start_contrast = None
    if slice_for is not None:
        start_contrast = mask_contrast(slice_for(start_index), start_mask)
    for direction in directions:
        previous, logits = start_mask, start_logits
        index = start_index + direction
        while 0 <= index < n_slices and (
            max_steps is None or abs(index - start_index) <= max_steps
        ):
            prompts = prompts_from_mask(previous, n_points)
            mask_input = logits[None] if (use_mask_prompt and logits is not None) else None
            predictor.set_embedding(embedding_for(index))
            masks, scores, low_res = predictor.predict(
                points=prompts.points_xy,
                labels=prompts.labels,
                box=prompts.box_xyxy,
                mask_input=mask_input,
                multimask=False,
            )
            mask, score = masks[0], float(scores[0])
            reason = None
            if mask.sum() < min_area:
                reason = f"object vanished (< {min_area} px)"
            elif (iou := mask_iou(mask, previous)) < min_iou:
                reason = f"IoU with previous slice {iou:.2f} < {min_iou}"
            elif start_contrast is not None and start_contrast > 0:
                ratio = mask_contrast(slice_for(index), mask) / start_contrast
                if ratio < min_contrast:
                    reason = f"contrast {ratio:.2f} of the start slice's < {min_contrast}"
            if reason is not None:
                yield SliceStep(index, direction, None, score, reason)
                break
            yield SliceStep(index, direction, mask, score)
            previous, logits = mask, low_res[0]
            index += direction


def propagate(
    predictor: Predictor,
    embedding_for: Callable[[int], ImageEmbedding],
    start_index: int,
    start_mask: np.ndarray,
    n_slices: int,
    start_logits: np.ndarray | None = None,
    min_iou: float = 0.5,
    min_area: int = 10,
    n_points: int = 1,
    use_mask_prompt: bool = True,
    slice_for: Callable[[int], np.ndarray] | None = None,
    min_contrast: float = 0.5,
    max_steps: int | None = None,
    progress: Progress | None = None,
) -> PropagationResult:
    """Run `iter_propagation` to the end; see there for the arguments.

    progress(done, total) is called after each slice (total = n_slices - 1, an upper bound);
    raising from it aborts.
    """
    result = PropagationResult()
    result.masks[start_index] = np.asarray(start_mask, dtype=bool)
    result.scores[start_index] = float("nan")
    for direction in (1, -1):
        result.stop_reasons[direction] = "reached the end of the stack (or max_steps)"
    steps = iter_propagation(
        predictor,
        embedding_for,
        start_index,
        start_mask,
        n_slices,
        start_logits,
        min_iou,
        min_area,
        n_points,
        use_mask_prompt,
        slice_for=slice_for,
        min_contrast=min_contrast,
        max_steps=max_steps,
    )
    for done, step in enumerate(steps, 1):
        if progress is not None:
            progress(done, max(1, n_slices - 1))
        if step.mask is None:
            result.stop_reasons[step.direction] = step.stop_reason or "stopped"
        else:
            result.masks[step.index] = step.mask
            result.scores[step.index] = step.score
    return result
