"""Training items of the instance decoder: cached SAM tokens + pixels + per-pixel targets.

Each labelled image is embedded once by the frozen encoder through `Session.embed` (so a
session with a ``cache_dir`` stores it in the shared zarr embedding cache and a rerun or a
resumed training reads it back), then kept as: the valid tokens, the decoder's pixels at the
working scale, the token coordinates of every working pixel, and the targets
(`targets.instance_targets`) of the labels resized (nearest) to the working scale.

Augmentation (`random_view`): a random crop of at most `crop` pixels per side, and one of the
8 flips / quarter turns, applied to the sampled token features, pixels and targets together
after the token branch (so the geometry stays exact). The encoder is not re-run on the turned
image: the fusion layers see SAM's features of the upright image, turned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ImageError
from ..label_check import check_instance_labels
from .network import token_grid, valid_tokens
from .pixels import decoder_pixels, resize_labels
from .targets import instance_targets

TOKEN_MARGIN = 2  # two 3x3 convolutions in the token branch: 2 tokens of context each side


class EmptyLabelsWarning(UserWarning):
    """A label image without objects was left out of instance-decoder training."""


@dataclass
class DecoderItem:
    """One image ready for the decoder.

    tokens: (256, th, tw) float32. pixels: (3, h, w) float32 at the working scale.
    rows (h, th) / cols (w, tw): token weights of the pixels (`network.token_grid`).
    targets: (3, h, w) float32.
    labels: (H, W) ground-truth ids at the original size (for validation).
    """

    name: str
    tokens: torch.Tensor
    pixels: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    labels: np.ndarray


def prepare_items(
    session,
    samples: Sequence,
    work_side: int,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[DecoderItem]:
    """Items for `samples` (`sam_core.evaluation.Sample` with a label image).

    Raises BinaryLabelsError (a binary label image of many objects, `sam_core.label_check`),
    ImageError when every label image is empty. Empty ones are skipped with a message through
    `warn` (default: an `EmptyLabelsWarning`).
    """
    items = []
    skipped = []
    for done, sample in enumerate(samples, start=1):
        labels = sample.label_image
        if labels is None:
            if sample.masks is None:
                raise ImageError(f"{sample.name}: no label image")
            labels = np.zeros(sample.shape, dtype=np.int32)
            for i, m in enumerate(sample.masks, start=1):
                labels[m] = i
        labels = check_instance_labels(np.asarray(labels), sample.name)
        if not np.any(labels):
            skipped.append(sample.name)
            message = f"{sample.name}: the label image is empty (all 0): left out of training"
            if warn is None:
                warnings.warn(message, EmptyLabelsWarning, stacklevel=2)
            else:
                warn(message)
        else:
            items.append(item_for(session, sample.image, labels, sample.name, work_side))
        if progress is not None:
            progress(done, len(samples))
    if samples and not items:
        raise ImageError(
            f"all {len(samples)} label images are empty (all pixels 0): nothing to train on"
        )
    return items


def item_for(session, image, labels: np.ndarray, name: str, work_side: int) -> DecoderItem:
    """One `DecoderItem` of an image array and its (H, W) instance labels."""
    loaded = session.load(image)
    if loaded.is_stack:
        raise ImageError(f"{name}: a stack {loaded.data.shape}; train on 2-D images")
    plane = loaded.plane()
    if tuple(labels.shape) != tuple(plane.shape[:2]):
        raise ImageError(f"{name}: labels {labels.shape} and image {plane.shape[:2]} differ")
    embedding = session.embed(loaded)
    if not hasattr(embedding, "features"):
        raise ImageError(
            f"{name}: {plane.shape[:2]} is above the session's max_side and would be tiled; "
            "train on images (or crops) up to that size"
        )
    pixels = decoder_pixels(plane, loaded.channels, loaded.normalization, work_side)
    out_hw = tuple(pixels.shape[-2:])
    geometry = embedding.geometry
    tokens = valid_tokens(embedding.features, geometry.input_hw)[0].float().cpu().clone()
    rows, cols = token_grid(out_hw, geometry.input_hw)
    targets = torch.from_numpy(instance_targets(resize_labels(labels, out_hw)))
    return DecoderItem(name, tokens, pixels, rows, cols, targets, np.asarray(labels))


def turn(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., H, W) under dihedral transform k: k % 4 quarter turns (torch.rot90, rows towards
    columns), then mirrored left-right if k >= 4."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


@dataclass
class View:
    """A random crop of an item (upright), and the dihedral transform k to apply after the
    tokens are sampled. rows (h, th) / cols (w, tw): token weights of the crop's pixels;
    pixels / targets (C, h, w) with h, w <= crop."""

    tokens: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    pixels: torch.Tensor
    targets: torch.Tensor
    k: int


def random_view(item: DecoderItem, crop: int, rng: np.random.Generator, augment: bool) -> View:
    """A random crop of at most `crop` x `crop` pixels and (with `augment`) one of the 8
    flips / quarter turns. Only the tokens the crop samples (plus the token branch's
    receptive field, `TOKEN_MARGIN`) are kept, so the token branch gives the same features
    there as on the whole grid at a fraction of the cost."""
    h, w = item.pixels.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    k = int(rng.integers(0, 8)) if augment else 0
    rows, cols = item.rows[y0 : y0 + ch], item.cols[x0 : x0 + cw]
    (t0, t1), (u0, u1) = _window(rows), _window(cols)
    return View(
        item.tokens[:, t0:t1, u0:u1],
        rows[:, t0:t1],
        cols[:, u0:u1],
        item.pixels[:, y0 : y0 + ch, x0 : x0 + cw],
        item.targets[:, y0 : y0 + ch, x0 : x0 + cw],
        k,
    )


def _window(weights: torch.Tensor, margin: int = TOKEN_MARGIN) -> tuple[int, int]:
    """[start, stop) of the tokens a crop's weights (n, t) touch, plus `margin` tokens each
    side (the token branch's receptive field), clipped to the grid."""
    used = torch.nonzero(weights.sum(0) > 0)[:, 0]
    return max(int(used.min()) - margin, 0), min(int(used.max()) + 1 + margin, weights.shape[1])


def pad_to(x: torch.Tensor, side: int) -> torch.Tensor:
    """(C, h, w) zero-padded at the bottom / right to (C, side, side)."""
    return F.pad(x, (0, side - x.shape[-1], 0, side - x.shape[-2]))
