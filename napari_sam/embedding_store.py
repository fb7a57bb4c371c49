"""In-memory image embeddings keyed by the pixels they were computed from.

The key is (digest of the 2-D plane's bytes + shape + dtype, channel, model name), so an edited
image, a replaced layer or another slice can never get a stale embedding, and the same plane
shown in two layers (or two viewers) is embedded once. Least recently used entries are dropped
beyond `max_items` (MobileSAM: 4 MB each).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from sam_core import ImageEmbedding

Key = tuple[str, int | None, str]  # (plane digest, channel, model name)


def plane_digest(plane: np.ndarray) -> str:
    """blake2b of the array's bytes, shape and dtype (about 10 ms for 8 MB)."""
    plane = np.ascontiguousarray(plane)
    digest = hashlib.blake2b(plane.tobytes(), digest_size=16)
    digest.update(repr((plane.shape, plane.dtype.str)).encode())
    return digest.hexdigest()


class EmbeddingStore:
    """Thread-safe LRU dict of embeddings."""

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Key, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> ImageEmbedding | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: Key, embedding: ImageEmbedding) -> None:
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# One store for the process: both widgets and every viewer share embeddings of equal planes.
SHARED_STORE = EmbeddingStore()
