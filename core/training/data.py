"""Training items: each image's embedding (or its pixels) and its objects as low-res targets.

The decoder predicts 256 x 256 logits covering the model's padded 1024 x 1024 input frame
(4 input pixels per cell). Targets live in that frame: each object mask is resized like the
image (longest side 1024), padded with background, and averaged over 4 x 4 cells, giving the
fraction of each cell inside the object (stored as uint8 0-255). Objects that cover no cell by
half or more (specks far below the model's resolution) are dropped.

With a frozen image encoder the embedding of every image (and of its left-right mirror when
`flips` is on) is computed once, before training; otherwise the resized pixels are kept and
the encoder runs in each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ImageError
from ..evaluation.datasets import Sample, check_has_objects
from ..image_input import MODEL_INPUT_SIZE, ImageGeometry, prepare_image
from ..predictor import Predictor

LOW_RES = 256
_CELL = MODEL_INPUT_SIZE // LOW_RES
_CHUNK = 16


@dataclass
class TrainingImage:
    """One training image, ready for decoder steps.

    features: (1, 256, 64, 64) float32 embedding (frozen encoder), else None.
    pixels: (1, 3, h, w) float32 resized RGB 0-255 (trained encoder), else None.
    geometry: sizes of the original and resized image.
    targets: (N, 256, 256) uint8 soft object targets in the input frame (255 = inside).
    """

    name: str
    features: torch.Tensor | None
    pixels: torch.Tensor | None
    geometry: ImageGeometry
    targets: torch.Tensor

    @property
    def valid_cells(self) -> tuple[int, int]:
        """(rows, cols) of low-res cells covering the image (the rest is padding)."""
        h, w = self.geometry.input_hw
        return -(-h // _CELL), -(-w // _CELL)


def label_masks(sample: Sample) -> list[np.ndarray]:
    """The sample's object masks, after the checks training needs (ImageError otherwise)."""
    if sample.label_image is not None:
        check_has_objects(sample.label_image, sample.name)
    masks = [m for m in sample.instances() if m.any()]
    if not masks:
        raise ImageError(f"{sample.name}: the label image is empty: no object to train on")
    return masks


def low_res_targets(masks: Sequence[np.ndarray], geometry: ImageGeometry) -> torch.Tensor:
    """(N, H, W) bool object masks → (N, 256, 256) uint8 cell coverage in the input frame."""
    h, w = geometry.input_hw
    out = []
    for start in range(0, len(masks), _CHUNK):
        chunk = torch.from_numpy(np.stack(masks[start : start + _CHUNK]).astype(np.float32))
        resized = F.interpolate(chunk[:, None], size=(h, w), mode="bilinear", antialias=True)
        padded = F.pad(resized, (0, MODEL_INPUT_SIZE - w, 0, MODEL_INPUT_SIZE - h))
        cells = F.avg_pool2d(padded, _CELL)[:, 0]
        out.append((cells.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out)


def prepare_training_images(
    samples: Sequence[Sample],
    predictor: Predictor | None,
    flips: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrainingImage]:
    """Training items for `samples` (and their mirrors with `flips`).

    predictor: computes the cached embeddings (frozen encoder); None keeps pixels instead.
    Raises ImageError for label images that are empty or one object covering everything.
    """
    variants = [(s, False) for s in samples] + ([(s, True) for s in samples] if flips else [])
    items: list[TrainingImage] = []
    for done, (sample, mirrored) in enumerate(variants, start=1):
        masks = label_masks(sample)
        image = sample.image
        if mirrored:
            image = np.ascontiguousarray(image[:, ::-1])
            masks = [np.ascontiguousarray(m[:, ::-1]) for m in masks]
        geometry = ImageGeometry.for_shape(sample.shape)
        targets = low_res_targets(masks, geometry)
        targets = targets[targets.flatten(1).amax(1) >= 128]
        if len(targets) == 0:
            raise ImageError(f"{sample.name}: every object is too small for the model to learn")
        features = pixels = None
        if predictor is not None:
            features = predictor.compute_embedding(image).features.cpu()
        else:
            resized, geometry = prepare_image(image)
            pixels = torch.from_numpy(resized).permute(2, 0, 1)[None].float()
        name = f"{sample.name} (mirrored)" if mirrored else sample.name
        items.append(TrainingImage(name, features, pixels, geometry, targets))
        if progress is not None:
            progress(done, len(variants))
    return items
