"""Training items: each image's embedding (or its pixels) and its objects as low-res targets.

The decoder predicts 256 x 256 logits covering the model's padded 1024 x 1024 input frame
(4 input pixels per cell). Targets live in that frame: each object mask is resized like the
image (longest side 1024), padded with background, and averaged over 4 x 4 cells, giving the
fraction of each cell inside the object (stored as uint8 0-255). Objects that cover no cell by
half or more (specks far below the model's resolution) are dropped.

With a frozen image encoder the embedding of every image (and of its left-right mirror when
`flips` is on, or of all 8 flips and quarter turns with `augment`) is computed once, before
training; otherwise the resized pixels are kept and the encoder runs in each step, and with
`augment` the trainer shows each image under a random flip/quarter turn (`random_view`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ImageError
from ..evaluation.datasets import Sample, check_has_objects
from ..image_input import MODEL_INPUT_SIZE, ImageGeometry, prepare_image
from ..label_check import check_instance_labels
from ..predictor import Predictor

LOW_RES = 256
_CELL = MODEL_INPUT_SIZE // LOW_RES
_CHUNK = 16
DIHEDRAL = 8  # 4 quarter turns, each plain or mirrored
MIRROR = 4  # the dihedral index of a plain left-right mirror


@dataclass
class TrainingImage:
    """One training image, ready for decoder steps.

    features: (1, 256, 64, 64) float32 embedding (frozen encoder), else None.
    pixels: (1, 3, h, w) float32 resized RGB 0-255 (trained encoder), else None.
    geometry: sizes of the original and resized image.
    targets: (N, 256, 256) uint8 soft object targets in the input frame (255 = inside).
    source: the sample, kept when the trainer draws a new flip/turn of it in each step.
    """

    name: str
    features: torch.Tensor | None
    pixels: torch.Tensor | None
    geometry: ImageGeometry
    targets: torch.Tensor
    source: Sample | None = None

    @property
    def valid_cells(self) -> tuple[int, int]:
        """(rows, cols) of low-res cells covering the image (the rest is padding)."""
        h, w = self.geometry.input_hw
        return -(-h // _CELL), -(-w // _CELL)


def instance_samples(
    samples: Sequence[Sample],
    split_binary: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Sample]:
    """`samples` whose label images are instances (`sam_core.label_check`'s rule).

    split_binary: a binary label image of separate objects (all = 1, 255 or True) becomes one
    object per connected region (a new Sample; one message each through `warn`, default a
    `SplitLabelsWarning`); without it such an image raises `BinaryLabelsError` (ImageError).
    Samples with instance masks (`Sample.masks`) or instance labels are returned as they are.
    """
    out = []
    for sample in samples:
        label = sample.label_image
        checked = (
            None if label is None else check_instance_labels(label, sample.name, split_binary, warn)
        )
        out.append(sample if checked is label else replace(sample, label_image=checked))
    return out


def label_masks(sample: Sample) -> list[np.ndarray]:
    """The sample's object masks, after the checks training needs (ImageError otherwise:
    an empty label image, one object covering everything, binary labels of many objects)."""
    if sample.label_image is not None:
        check_has_objects(sample.label_image, sample.name)
        check_instance_labels(sample.label_image, sample.name)
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


def dihedral(array: np.ndarray, k: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """`array` turned k % 4 quarter turns counter-clockwise in the plane of `axes` (rows,
    columns), then mirrored left-right if k >= 4; k = 0..7 gives the 8 symmetries of a square."""
    if not 0 <= k < DIHEDRAL:
        raise ValueError(f"k must be 0..{DIHEDRAL - 1}, got {k}")
    out = np.rot90(array, k % 4, axes=axes)
    if k >= MIRROR:
        out = np.flip(out, axis=axes[1])
    return np.ascontiguousarray(out)


def transformed_sample(sample: Sample, k: int) -> Sample:
    """`sample` with its image and every per-pixel annotation under `dihedral(..., k)`."""
    if k == 0:
        return sample
    return replace(
        sample,
        name=f"{sample.name} ({_view_name(k)})",
        image=dihedral(sample.image, k),
        label_image=None if sample.label_image is None else dihedral(sample.label_image, k),
        masks=None if sample.masks is None else dihedral(sample.masks, k, axes=(1, 2)),
        ignore=None if sample.ignore is None else dihedral(sample.ignore, k),
        boundaries=None,
    )


def _view_name(k: int) -> str:
    turn = f"turned {90 * (k % 4)} deg" if k % 4 else ""
    return ", ".join(part for part in (turn, "mirrored" if k >= MIRROR else "") if part)


def training_image(
    sample: Sample, predictor: Predictor | None, keep_source: bool = False
) -> TrainingImage:
    """One training item for `sample` (embedded by `predictor`, or its pixels kept if None).

    Raises ImageError for label images that are empty, one object covering everything, or
    binary labels of many objects (`instance_samples` splits those first).
    """
    masks = label_masks(sample)
    geometry = ImageGeometry.for_shape(sample.shape)
    targets = low_res_targets(masks, geometry)
    targets = targets[targets.flatten(1).amax(1) >= 128]
    if len(targets) == 0:
        raise ImageError(f"{sample.name}: every object is too small for the model to learn")
    features = pixels = None
    if predictor is not None:
        features = predictor.compute_embedding(sample.image).features.cpu()
    else:
        resized, geometry = prepare_image(sample.image)
        pixels = torch.from_numpy(resized).permute(2, 0, 1)[None].float()
    source = sample if keep_source else None
    return TrainingImage(sample.name, features, pixels, geometry, targets, source)


def random_view(item: TrainingImage, rng: np.random.Generator) -> TrainingImage:
    """`item` under a random one of the 8 flips/quarter turns (pixels kept, no embedding);
    the item itself when it kept no source sample."""
    if item.source is None:
        return item
    k = int(rng.integers(0, DIHEDRAL))
    if k == 0:
        return item
    return training_image(transformed_sample(item.source, k), None, keep_source=False)


def prepare_training_images(
    samples: Sequence[Sample],
    predictor: Predictor | None,
    flips: bool = False,
    progress: Callable[[int, int], None] | None = None,
    augment: bool = False,
) -> list[TrainingImage]:
    """Training items for `samples`.

    predictor: computes the cached embeddings (frozen encoder); None keeps pixels instead.
    flips: also each sample's left-right mirror.
    augment: with a predictor, all 8 flips/quarter turns of each sample (embedded once);
    without, one item per sample that keeps its source for `random_view` in each step.
    Raises ImageError for label images that are empty, one object covering everything, or
    binary labels of many objects (`instance_samples` splits those first).
    """
    if augment and predictor is not None:
        turns = range(DIHEDRAL)
    elif flips and not augment:
        turns = (0, MIRROR)
    else:
        turns = (0,)
    variants = [(s, k) for k in turns for s in samples]
    keep = augment and predictor is None
    items: list[TrainingImage] = []
    for done, (sample, k) in enumerate(variants, start=1):
        items.append(training_image(transformed_sample(sample, k), predictor, keep_source=keep))
        if progress is not None:
            progress(done, len(variants))
    return items
