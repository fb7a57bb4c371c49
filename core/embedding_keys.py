"""Embeddings keyed on the pixels they were computed from, and the process's memory cache.

`embedding_key` is the one key every cache uses (the memory LRU and the zarr store names): a
digest of the plane's selected channels, the normalisation, the weights' hash, the precision
and the tiling. Paths, names and file times never enter it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from .embedding import ImageEmbedding
from .image_input import Normalization, _select_channels
from .session_image import Channels
from .tiling import TiledEmbedding, TileLayout

__all__ = ["MEMORY_CACHE", "EmbeddingLRU", "embedding_key", "plane_digest"]

Embedding = ImageEmbedding | TiledEmbedding


def plane_digest(plane: np.ndarray, channels: Channels) -> str:
    """blake2b of the selected channels' pixels (bytes, shape, dtype) of one 2-D plane."""
    plane = np.asarray(plane)
    if plane.ndim == 3 and channels is not None:
        plane = _select_channels(plane, channels)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((plane.shape, plane.dtype.str)).encode())
    contiguous = np.ascontiguousarray(plane)
    rows = contiguous.reshape(contiguous.shape[0], -1)
    step = max(1, (64 << 20) // max(1, rows[0].nbytes))  # 64 MiB at a time
    for start in range(0, rows.shape[0], step):
        digest.update(rows[start : start + step].data)
    return digest.hexdigest()


def embedding_key(
    plane: np.ndarray,
    channels: Channels,
    normalization: Normalization,
    model_id: str,
    precision: str,
    layout: TileLayout | None,
) -> str:
    """The cache key of the embedding of `plane` ((H, W[, C]) as the user holds it).

    The pixels the encoder sees are a function of the plane's selected channels and the
    normalisation (and, for tiles, the layout): those, the model's weights hash and the
    precision make the key. Paths, names and file times never enter it.
    """
    tiling = None if layout is None else (layout.tile_shape, layout.halo)
    settings = repr((channels, normalization, model_id, precision, tiling))
    return (
        plane_digest(plane, channels)
        + "-"
        + hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()
    )


class EmbeddingLRU:
    """Thread-safe LRU of embeddings, bounded by tiles held (4 MiB each for SAM's 64² × 256)."""

    def __init__(self, max_tiles: int = 48) -> None:
        self.max_tiles = max_tiles
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Embedding | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, embedding: Embedding) -> None:
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > 1 and self._tiles() > self.max_tiles:
                self._items.popitem(last=False)

    def _tiles(self) -> int:
        return sum(_n_tiles(e) for e in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _n_tiles(embedding: Embedding) -> int:
    return len(embedding.embeddings) if isinstance(embedding, TiledEmbedding) else 1


MEMORY_CACHE = EmbeddingLRU()
