"""Refine an existing segmentation with SAM: each object's box and mask become the prompts.

The semi-automatic stage of the paper's data engine (§4) starts from masks someone already
has (Cellpose, a threshold, an older model): each object is given to SAM as its box prompt
plus its mask as a mask prompt (the (256, 256) low-res logits SAM's decoder takes, §3), and
SAM's single output replaces it. napari, FiftyOne and the CLI all call `refine_instances`.

    result = refine_instances(session, image, label_image)      # (H, W) ints, 0 = background
    result.masks      # (N, H, W) bool, one per object, in label order
    result.records    # one `MaskProvenance` of kind "refined" per object
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PromptError
from .image_input import ImageGeometry
from .mask_geometry import box_prompt
from .provenance import MaskProvenance, refined_provenance

__all__ = ["MASK_LOGIT", "RefineResult", "mask_to_logits", "refine_instances", "refine_one"]

# The logit a mask prompt gives inside (+) and outside (-) the object: confident enough that
# the decoder keeps the object's extent, soft at the boundary (linear in the covered fraction).
MASK_LOGIT = 8.0
LOW_RES = 256


def mask_to_logits(mask: np.ndarray) -> np.ndarray:
    """(256, 256) float32 mask-prompt logits of an (H, W) bool mask in its image's frame.

    SAM's low-res frame is the 1024² padded input frame at a quarter of its size: the image
    is resized so its long side is 1024 (`ImageGeometry.input_hw`), padded bottom/right. Each
    low-res pixel gets ``MASK_LOGIT * (2 f - 1)`` for the fraction f of it the mask covers;
    the padding is background. Deterministic (same mask → same bytes).
    """
    from skimage.transform import resize

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise PromptError(f"a mask prompt must be (H, W), got shape {mask.shape}")
    geometry = ImageGeometry.for_shape(mask.shape)
    h, w = geometry.input_hw
    low_hw = (max(1, round(h * LOW_RES / 1024)), max(1, round(w * LOW_RES / 1024)))
    fraction = resize(
        mask.astype(np.float32), low_hw, order=1, anti_aliasing=True, preserve_range=True
    )
    logits = np.full((LOW_RES, LOW_RES), -MASK_LOGIT, dtype=np.float32)
    logits[: low_hw[0], : low_hw[1]] = MASK_LOGIT * (2.0 * np.clip(fraction, 0, 1) - 1.0)
    return logits


@dataclass(frozen=True)
class RefineResult:
    """Refined objects: masks (N, H, W) bool, scores (N,) predicted IoU, labels (N,) the source
    ids (label values, or indices of a mask list), records (N) `MaskProvenance`."""

    masks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    records: list[MaskProvenance]

    def label_image(self) -> np.ndarray:
        """(H, W) uint32: object i painted with label i + 1, later objects over earlier."""
        hw = self.masks.shape[1:] if len(self.masks) else (0, 0)
        out = np.zeros(hw, dtype=np.uint32)
        for i, mask in enumerate(self.masks):
            out[mask] = i + 1
        return out


def refine_one(session, embedding, object_mask: np.ndarray, use_mask: bool = True):
    """(mask (H, W) bool, predicted IoU, box_xyxy (4,), mask_input (256, 256) | None) of one
    object of an (H, W) bool mask: its box prompt (`mask_geometry.box_prompt`) and, with
    `use_mask`, its mask as a mask prompt, one decoder output.

    For a tiled embedding the mask prompt is made in the frame of the tile holding the box
    centre. Raises PromptError for an empty mask."""
    from .tiling import TiledEmbedding

    object_mask = np.asarray(object_mask, dtype=bool)
    if not object_mask.any():
        raise PromptError("an empty object can't be refined (it has no box)")
    box = box_prompt(object_mask)
    mask_input = None
    if use_mask:
        frame = object_mask
        if isinstance(embedding, TiledEmbedding):
            tile = embedding.layout.tile_at((box[1] + box[3]) / 2, (box[0] + box[2]) / 2)
            y0, x0, y1, x1 = tile.outer
            frame = object_mask[y0:y1, x0:x1]
        mask_input = mask_to_logits(frame)
    masks, scores, _ = session.predict(
        embedding,
        box=box,
        mask_input=None if mask_input is None else mask_input[None],
        multimask=False,
    )
    return masks[0], float(scores[0]), box, mask_input


def _objects(objects) -> tuple[list[np.ndarray], np.ndarray]:
    """(masks, ids) of a label image (H, W) ints, a (N, H, W) bool stack, a sequence of (H, W)
    masks or a {id: mask} mapping."""
    if isinstance(objects, Mapping):
        ids = list(objects)
        return [np.asarray(objects[i], dtype=bool) for i in ids], np.asarray(ids)
    if isinstance(objects, np.ndarray) and objects.ndim == 2 and objects.dtype != bool:
        ids = np.unique(objects)
        ids = ids[ids != 0]
        return [objects == i for i in ids], ids
    masks = [np.asarray(m, dtype=bool) for m in objects]
    if masks and masks[0].ndim != 2:
        raise PromptError(f"objects must be (H, W) masks, got shape {masks[0].shape}")
    return masks, np.arange(len(masks))


def refine_instances(
    session,
    image,
    objects,
    *,
    z: int | None = None,
    use_mask: bool = True,
    source: Mapping[str, Any] | None = None,
    image_path=None,
    reviews: Sequence[Mapping[str, Any] | None] | None = None,
    progress=None,
) -> RefineResult:
    """SAM-refined masks of an existing segmentation of `image` (array, path or
    `SessionImage`; plane `z` of a stack), one per object, with provenance of kind "refined".

    objects: a label image (H, W) ints (0 background), a (N, H, W) bool stack, a list of (H, W)
        masks, or {id: (H, W) mask}. Empty objects are skipped.
    use_mask: give each object's mask as a mask prompt besides its box (else the box alone).
    source: recorded in each record's parameters.source with the object's id under "label".
    reviews: per object review dicts (class, flags, rating) to keep in its record.
    progress(done, total): called per object.
    Raises ImageError for bad images, PromptError for objects whose shape is not the plane's.
    """
    image = session.load(image)
    masks, ids = _objects(objects)
    hw = image.image_hw
    for mask in masks:
        if mask.shape != hw:
            raise PromptError(f"an object mask of shape {mask.shape} on an image of {hw} pixels")
    embedding = session.embed(image, z)
    out_masks, scores, labels, records = [], [], [], []
    for i, (mask, label) in enumerate(zip(masks, ids, strict=True)):
        if mask.any():
            refined, score, box, mask_input = refine_one(session, embedding, mask, use_mask)
            label_value = label.item() if isinstance(label, np.generic) else label
            records.append(
                refined_provenance(
                    session,
                    image,
                    z=z,
                    box_xyxy=box,
                    mask_prompt=mask if use_mask else None,
                    mask_input=mask_input,
                    mask=refined,
                    source={**(source or {}), "label": label_value},
                    image_path=image_path,
                    review=None if reviews is None else reviews[i],
                )
            )
            out_masks.append(refined)
            scores.append(score)
            labels.append(label)
        if progress is not None:
            progress(i + 1, len(masks))
    stack = np.stack(out_masks) if out_masks else np.zeros((0, *hw), dtype=bool)
    return RefineResult(stack, np.asarray(scores, np.float32), np.asarray(labels), records)
