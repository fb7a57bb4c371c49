"""Optional on-disk embeddings: one zarr `EmbeddingCache` store per image layer and model in a
folder the user picks, so a later session (or a restart) skips the image encoder.

Store name: ``<layer name>_<model>_<channel>.zarr``. The store records the data hash, model
and settings; an image that changed under the same name is recomputed, never misread.
Images are embedded whole (no tiling) so that every plugin feature works on the result.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from sam_core import ImageEmbedding, Predictor
from sam_core.embedding_cache import EmbeddingCache

NO_TILING = 1 << 30  # max_side: embed every image as one (like the in-memory path)


def store_path(folder: str | Path, layer_name: str, model: str, channel: int | None) -> Path:
    """Where the store of one layer/model/channel lives (names made filesystem-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{layer_name}_{Path(model).name}_{channel}")
    return Path(folder).expanduser() / f"{safe}.zarr"


class DiskCaches:
    """EmbeddingCache objects per (store path, data array), created on first use."""

    def __init__(self) -> None:
        self._caches: dict[tuple[Path, int], EmbeddingCache] = {}
        self._lock = threading.Lock()

    def embedding(
        self,
        path: Path,
        predictor: Predictor,
        data: object,
        rgb: bool,
        channel: int | None,
        z: int | None,
    ) -> ImageEmbedding:
        """Embedding of the image (z None) or of slice z of the stack, read or computed.

        data: the layer's (H, W[, C]) or (Z, H, W[, C]) array; channel: the chosen channel
        of a channels-last image (None: gray/RGB; RGBA drops alpha)."""
        array = np.asarray(data)
        channels = channel
        if channel is None and rgb and array.shape[-1] == 4:
            channels = (0, 1, 2)
        with self._lock:
            key = (path, id(data))
            cache = self._caches.get(key)
            if cache is None:
                cache = EmbeddingCache(path, predictor, channels=channels, max_side=NO_TILING)
                self._caches[key] = cache
        if z is None:
            return cache.embedding(array)
        return cache.slice_embedding(array, z)

    def forget(self) -> None:
        """Drop the cache objects (after an image was edited in place)."""
        with self._lock:
            self._caches.clear()


DISK_CACHES = DiskCaches()
