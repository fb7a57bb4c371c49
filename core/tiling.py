"""Large images, tile by tile: a tile layout with a halo, tiled embeddings, tiled prompting.

SAM sees every image at 1024 pixels on its longest side, so a large image loses detail and an
8192² image would need its whole float copy in memory. Above `DEFAULT_MAX_SIDE` pixels we cut
the image into tiles instead. Each tile has an *inner* box (the inner boxes partition the
image) and an *outer* box (the inner box grown by a halo on every side, clipped to the image).
The model embeds the outer box, so an object near a seam is whole in at least one tile.

    layout = TileLayout.for_shape((H, W), tile_shape=(1024, 1024), halo=(256, 256))
    tiled = compute_tiled_embedding(predictor, image, layout)      # one embedding per tile
    masks, scores, logits = TiledPredictor(predictor, tiled).predict(points=[[x, y]])

Boxes are (y0, x0, y1, x1) pixels, yx order, end-exclusive (numpy slicing order). Prompts stay
(x, y) like everywhere else in sam_core.

Intensities: non-uint8 images are normalised once for the whole image (the same percentiles
for every tile, estimated on a strided subsample of at most ~4 million pixels), so tiles agree
with each other. Only one tile's pixels are converted and resized at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .embedding import ImageEmbedding
from .errors import EmbeddingError, PromptError
from .image_input import PERCENTILES, Normalization, _as_array, _select_channels

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 pixels, end-exclusive
Progress = Callable[[int, int], None]

DEFAULT_MAX_SIDE = 2048
DEFAULT_TILE_SHAPE = (1024, 1024)
DEFAULT_HALO = (256, 256)
# Logit given to pixels outside the tile a prediction came from (return_logits=True).
OUTSIDE_LOGIT = -1.0e4
_NORMALIZATION_SAMPLE = 4_000_000  # pixels used to estimate the global percentiles


def needs_tiling(image_hw: Sequence[int], max_side: int = DEFAULT_MAX_SIDE) -> bool:
    """Whether an image of (H, W) pixels is larger than `max_side` on a side."""
    return max(int(image_hw[0]), int(image_hw[1])) > max_side


def layout_for(
    image_hw: Sequence[int],
    tile_shape: Sequence[int] = DEFAULT_TILE_SHAPE,
    halo: Sequence[int] = DEFAULT_HALO,
    max_side: int = DEFAULT_MAX_SIDE,
) -> TileLayout | None:
    """The one tiling decision: None (embed whole) unless a side exceeds `max_side` pixels,
    then the layout of `tile_shape` (yx) tiles with `halo` (yx) pixels of context."""
    if not needs_tiling(image_hw, max_side):
        return None
    return TileLayout.for_shape(
        (int(image_hw[0]), int(image_hw[1])), tuple(tile_shape), tuple(halo)
    )


@dataclass(frozen=True)
class Tile:
    """One tile. inner/outer: (y0, x0, y1, x1) pixels of the full image, end-exclusive."""

    index: int
    inner: Box
    outer: Box

    @property
    def outer_hw(self) -> tuple[int, int]:
        return self.outer[2] - self.outer[0], self.outer[3] - self.outer[1]

    @property
    def offset_xy(self) -> tuple[int, int]:
        """(x0, y0) of the outer box: subtract from full-image xy to get tile xy."""
        return self.outer[1], self.outer[0]


@dataclass(frozen=True)
class TileLayout:
    """Tiles covering an (H, W) image; inner boxes partition it, outer boxes overlap by the halo.

    tile_shape: the largest inner box (h, w); the image is split into ceil(H / h) rows and
    ceil(W / w) columns of near-equal size. halo: (hy, hx) pixels added on each side.
    """

    image_hw: tuple[int, int]
    tile_shape: tuple[int, int]
    halo: tuple[int, int]
    tiles: tuple[Tile, ...]
    grid_shape: tuple[int, int]

    @classmethod
    def for_shape(
        cls,
        image_hw: Sequence[int],
        tile_shape: Sequence[int] = DEFAULT_TILE_SHAPE,
        halo: Sequence[int] = DEFAULT_HALO,
    ) -> TileLayout:
        h, w = (int(v) for v in image_hw[:2])
        th, tw = (int(v) for v in tile_shape)
        hy, hx = (int(v) for v in halo)
        if h < 1 or w < 1:
            raise ValueError(f"image shape must be positive, got {(h, w)}")
        if th < 1 or tw < 1:
            raise ValueError(f"tile_shape must be positive, got {(th, tw)}")
        if hy < 0 or hx < 0:
            raise ValueError(f"halo must be non-negative, got {(hy, hx)}")
        ys = _even_cuts(h, math.ceil(h / th))
        xs = _even_cuts(w, math.ceil(w / tw))
        tiles = []
        for y0, y1 in itertools.pairwise(ys):
            for x0, x1 in itertools.pairwise(xs):
                outer = (max(0, y0 - hy), max(0, x0 - hx), min(h, y1 + hy), min(w, x1 + hx))
                tiles.append(Tile(len(tiles), (y0, x0, y1, x1), outer))
        return cls((h, w), (th, tw), (hy, hx), tuple(tiles), (len(ys) - 1, len(xs) - 1))

    def __len__(self) -> int:
        return len(self.tiles)

    def tile_at(self, y: float, x: float) -> Tile:
        """The tile whose inner box holds pixel (row y, column x); positions are clamped."""
        h, w = self.image_hw
        yi = min(max(math.floor(y + 0.5), 0), h - 1)
        xi = min(max(math.floor(x + 0.5), 0), w - 1)
        rows, cols = self.grid_shape
        row = next(i for i in range(rows) if self.tiles[i * cols].inner[2] > yi)
        col = next(j for j in range(cols) if self.tiles[j].inner[3] > xi)
        return self.tiles[row * cols + col]

    def to_dict(self) -> dict:
        """JSON-ready description (what the embedding cache records)."""
        return {
            "tile_shape": list(self.tile_shape),
            "halo": list(self.halo),
            "n_tiles": len(self.tiles),
        }


def _even_cuts(length: int, parts: int) -> list[int]:
    return [round(i * length / parts) for i in range(parts + 1)]


@dataclass(frozen=True)
class TiledEmbedding:
    """Embeddings of every tile of one image: embeddings[i] belongs to layout.tiles[i] and was
    computed from image[outer box] (its geometry maps tile pixels, not full-image pixels)."""

    layout: TileLayout
    embeddings: tuple[ImageEmbedding, ...]
    model_name: str

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.layout.tiles):
            raise EmbeddingError(
                f"{len(self.embeddings)} tile embeddings for a layout of {len(self.layout)} tiles"
            )
        for tile, embedding in zip(self.layout.tiles, self.embeddings, strict=True):
            if embedding.original_hw != tile.outer_hw:
                raise EmbeddingError(
                    f"tile {tile.index}: embedding of a {embedding.original_hw} image, "
                    f"but the tile's outer box is {tile.outer_hw}"
                )

    @property
    def original_hw(self) -> tuple[int, int]:
        return self.layout.image_hw


class TileSource:
    """Hands out one tile's pixels at a time, with intensities mapped the same way for all tiles.

    image: (H, W), (H, W, 3) or (H, W, C) array of any real dtype (the rules of `image_input`).
    channels / normalization: as for `Predictor.set_image`, applied to the whole image.
    """

    def __init__(
        self,
        image: np.ndarray,
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
    ) -> None:
        self.image = _as_array(image)  # validates rank, dtype, NaN/inf
        self.channels = channels
        self.normalization = normalization
        self._range: tuple[float, float] | None = None
        self._passthrough = self.image.dtype == np.uint8 and normalization in ("auto", "none")
        if not self._passthrough and normalization != "none":
            self._range = _global_range(self.image, channels, normalization)

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def pixels(self, tile: Tile) -> tuple[np.ndarray, object, Normalization]:
        """(pixels of the outer box, channels, normalization) to pass to `compute_embedding`."""
        y0, x0, y1, x1 = tile.outer
        part = self.image[y0:y1, x0:x1]
        if self._passthrough or self.normalization == "none":
            return part, self.channels, self.normalization
        lo, hi = self._range
        selected = _select_channels(part, self.channels).astype(np.float32)
        if hi <= lo:
            return np.zeros_like(selected), None, "none"
        mapped = np.clip((selected - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
        return mapped, None, "none"


def _global_range(
    image: np.ndarray, channels: int | Sequence[int] | None, normalization: Normalization
) -> tuple[float, float]:
    """The (lo, hi) intensities mapped to 0 and 255, as `image_input` computes them, from a
    strided subsample when the image has more than ~4 million pixels."""
    h, w = image.shape[:2]
    step = max(1, math.ceil(math.sqrt(h * w / _NORMALIZATION_SAMPLE)))
    values = _select_channels(image[::step, ::step], channels).astype(np.float32)
    if normalization in ("auto", "percentile"):
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
        if hi <= lo:
            lo, hi = float(values.min()), float(values.max())
        return lo, hi
    if normalization == "minmax":
        if step > 1:  # extremes must not be missed by the subsample
            values = _select_channels(image, channels)
        return float(values.min()), float(values.max())
    raise ValueError(f"unknown normalization {normalization!r}")


def embed_tile(predictor, source: TileSource, tile: Tile) -> ImageEmbedding:
    """The embedding of image[tile.outer] (geometry in tile pixels)."""
    pixels, channels, normalization = source.pixels(tile)
    return predictor.compute_embedding(pixels, channels, normalization)


def compute_tiled_embedding(
    predictor,
    image: np.ndarray,
    layout: TileLayout,
    progress: Progress | None = None,
    channels: int | Sequence[int] | None = None,
    normalization: Normalization = "auto",
) -> TiledEmbedding:
    """Embed every tile of `image` (H, W[, C]) with `predictor` (a `Predictor`), one at a time.

    progress: called as progress(tiles_done, n_tiles) after each tile; raising aborts.
    Memory: the image itself, one tile's converted pixels, and 4 MiB per tile of features.
    """
    source = TileSource(image, channels, normalization)
    if source.image_hw != layout.image_hw:
        raise EmbeddingError(f"image is {source.image_hw} but the layout is for {layout.image_hw}")
    embeddings = []
    for tile in layout.tiles:
        embeddings.append(embed_tile(predictor, source, tile))
        if progress is not None:
            progress(len(embeddings), len(layout))
    return TiledEmbedding(layout, tuple(embeddings), predictor.model_name)


class TiledPredictor:
    """`Predictor.predict` on a tiled image: each object's prompt goes to one tile.

    The tile is the one whose inner box holds the prompt's centre (the box centre, else the
    mean of the positive points, else of all points). Prompts are shifted into that tile's
    outer box, decoded there, and the mask is pasted back at full-image size. All prompts of one
    object must lie inside that tile's outer box (inner box + halo). The wrapped predictor's
    current image is changed to the chosen tile's embedding.
    """

    def __init__(self, predictor, tiled: TiledEmbedding) -> None:
        if tiled.model_name != predictor.model_name:
            raise EmbeddingError(
                f"tiled embedding was computed by model {tiled.model_name!r}, "
                f"not by this predictor's {predictor.model_name!r}"
            )
        self.predictor = predictor
        self.tiled = tiled
        self._current: int | None = None

    @property
    def original_hw(self) -> tuple[int, int]:
        return self.tiled.original_hw

    def tile_for_prompt(self, points: object = None, labels: object = None, box: object = None):
        """The `Tile` one object's prompt (points (N, 2) xy, labels (N,), box (4,)) goes to."""
        if box is not None:
            x0, y0, x1, y1 = _as_float(box, (4,), "box")
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        elif points is not None:
            pts = _as_float(points, (-1, 2), "points")
            chosen = pts
            if labels is not None:
                positive = np.asarray(labels).reshape(-1) == 1
                if positive.shape[0] == pts.shape[0] and positive.any():
                    chosen = pts[positive]
            cx, cy = chosen.mean(axis=0)
        else:
            raise PromptError("a tiled prediction needs points or a box to find its tile")
        return self.tiled.layout.tile_at(cy, cx)

    def predict(
        self,
        points: object = None,
        labels: object = None,
        box: object = None,
        mask_input: object = None,
        multimask: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `Predictor.predict`, prompts in full-image pixels; masks are (M, H, W) of the full
        image (False, or `OUTSIDE_LOGIT`, outside the chosen tile). Batches (points (B, N, 2),
        boxes (B, 4)) are routed object by object and stacked. Low-res logits (and mask_input)
        belong to the object's tile."""
        pts = None if points is None else np.asarray(points, dtype=np.float64)
        boxes = None if box is None else np.asarray(box, dtype=np.float64)
        batch = None
        if pts is not None and pts.ndim == 3:
            batch = pts.shape[0]
        if boxes is not None and boxes.ndim == 2:
            batch = boxes.shape[0]
        if batch is None:
            return self._predict_one(pts, labels, boxes, mask_input, multimask, return_logits)
        lbl = None if labels is None else np.asarray(labels)
        masks_in = None if mask_input is None else np.asarray(mask_input, dtype=np.float32)
        results = [
            self._predict_one(
                _item(pts, b, 3),
                _item(lbl, b, 2),
                _item(boxes, b, 2),
                _item(masks_in, b, 4),
                multimask,
                return_logits,
            )
            for b in range(batch)
        ]
        return tuple(np.stack(parts) for parts in zip(*results, strict=True))

    def _predict_one(self, points, labels, box, mask_input, multimask, return_logits):
        tile = self.tile_for_prompt(points, labels, box)
        ox, oy = tile.offset_xy
        th, tw = tile.outer_hw
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2) - (ox, oy)
            outside = (
                (points[:, 0] < -0.5)
                | (points[:, 0] > tw - 0.5)
                | (points[:, 1] < -0.5)
                | (points[:, 1] > th - 0.5)
            )
            if outside.any():
                raise PromptError(
                    f"{int(outside.sum())} point(s) of this object lie outside tile "
                    f"{tile.index}'s region {tile.outer} (y0, x0, y1, x1) that its centre falls "
                    "in; prompts for one object must fit within one tile plus its halo"
                )
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(4) - (ox, oy, ox, oy)
        if self._current != tile.index:
            self.predictor.set_embedding(self.tiled.embeddings[tile.index])
            self._current = tile.index
        masks, scores, low_res = self.predictor.predict(
            points, labels, box, mask_input, multimask, return_logits
        )
        h, w = self.original_hw
        full = np.full((masks.shape[0], h, w), OUTSIDE_LOGIT if return_logits else 0, masks.dtype)
        y0, x0, y1, x1 = tile.outer
        full[:, y0:y1, x0:x1] = masks
        return full, scores, low_res


def _as_float(value: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} of shape {np.shape(value)} can't be used: {exc}") from exc
    if not np.isfinite(array).all():
        raise PromptError(f"{what} contain NaN or infinite values")
    return array


def _item(array: np.ndarray | None, b: int, batched_ndim: int):
    """Element b of a batched prompt array, or the array itself when it is shared."""
    if array is None:
        return None
    if array.ndim == batched_ndim:
        return array[b] if array.shape[0] > 1 else array[0]
    return array
