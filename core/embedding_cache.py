"""Image embeddings kept on disk in a zarr (v3) store, checked on every reopen.

    cache = EmbeddingCache("cells.zarr", predictor)
    embedding = cache.embedding(image)              # computed and written once, then read
    embedding = cache.slice_embedding(stack, 12)    # one slice/frame of a (Z, H, W[, C]) stack
    cache.compute_all(stack, progress=...)          # every slice, written as computed: resumes

One store holds the embeddings of one image or one stack. Layout (N entries = 1 for an image,
Z for a stack; T tiles per entry, 1 when not tiled):

    zarr.json      group attributes: provenance (below)
    features/      float32 (N, T, 256, 64, 64), one uncompressed 4 MiB chunk per tile
    original_hw/   int32 (N, T, 2): (H, W) pixels the tile's embedding maps (ImageGeometry)
    input_hw/      int32 (N, T, 2): (h, w) of the resized model input (ImageGeometry)
    checksum/      uint32 (N, T): CRC-32 of each tile's feature bytes
    done/          uint8 (N, T): 1 once a tile's features, geometry and checksum are written

Attributes: ``format`` (store version), ``samscope_version``, ``model`` (name, weights_sha256,
precision), ``data`` (kind image/stack, shape, dtype, sha256 of shape + dtype + bytes),
``tiling`` (null, or tile_shape, halo, n_tiles; pixels), ``preprocessing`` (channels,
normalization). On reopen all of them must match the current model, data and settings.
A mismatch wipes and recomputes the store (``on_mismatch="recompute"``, the default) or raises
`EmbeddingError` (``on_mismatch="error"``). A damaged store (unreadable metadata, a missing
"done" flag, a truncated chunk, a wrong checksum or geometry) is repaired: the damaged part is
recomputed, with a warning logged and noted in `EmbeddingCache.repairs`; damaged data is never
returned. One process writes a store at a time.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .embedding import ImageEmbedding
from .errors import EmbeddingError, ImageError
from .image_input import ImageGeometry, Normalization
from .tiling import (
    DEFAULT_HALO,
    DEFAULT_MAX_SIDE,
    DEFAULT_TILE_SHAPE,
    TiledEmbedding,
    TileLayout,
    TileSource,
    embed_tile,
    needs_tiling,
)

FORMAT_VERSION = 1
FEATURE_SHAPE = (256, 64, 64)
_ARRAYS = ("features", "original_hw", "input_hw", "checksum", "done")
_KNOWN_ENTRIES = {"zarr.json", *_ARRAYS}
_log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def data_hash(data: np.ndarray) -> str:
    """sha256 hex digest of an array's shape, dtype and bytes (C order), hashed slice by slice."""
    digest = hashlib.sha256(f"{tuple(data.shape)}|{data.dtype.str}|".encode())
    rows = data.reshape(1, *data.shape) if data.ndim < 3 else data
    for part in rows:
        digest.update(np.ascontiguousarray(part).data)
    return digest.hexdigest()


class EmbeddingCache:
    """A zarr store of embeddings for one image or one stack, computed by `predictor`.

    path: the store folder (``*.zarr``); made on first use. An existing folder that is not an
        embedding store is refused, never overwritten.
    predictor: the `Predictor` whose model computes (and must have computed) the embeddings.
    tile_shape: None tiles images larger than `max_side` pixels on a side with tiles of
        `DEFAULT_TILE_SHAPE`; a (h, w) tuple always tiles with that inner tile size.
    halo: (hy, hx) pixels added around each tile. channels / normalization: as `set_image`.
    on_mismatch: "recompute" (default) or "error" when the store was made for another model,
        image or settings.

    The data hash is computed once per array this object sees (it is checked against a cheap
    sample after that); after changing an array in place, use a new EmbeddingCache.
    """

    def __init__(
        self,
        path: str | Path,
        predictor,
        tile_shape: Sequence[int] | None = None,
        halo: Sequence[int] = DEFAULT_HALO,
        on_mismatch: str = "recompute",
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        if on_mismatch not in ("recompute", "error"):
            raise ValueError(f"on_mismatch must be 'recompute' or 'error', got {on_mismatch!r}")
        self.path = Path(path).expanduser()
        self.predictor = predictor
        self.tile_shape = None if tile_shape is None else tuple(int(v) for v in tile_shape)
        self.halo = tuple(int(v) for v in halo)
        self.on_mismatch = on_mismatch
        self.channels = channels
        self.normalization = normalization
        self.max_side = max_side
        self.repairs: list[str] = []
        self._group = None
        self._attrs: dict | None = None
        self._hashes: dict[tuple, str] = {}

    # ------------------------------------------------------------------------------ public
    def embedding(
        self,
        image: np.ndarray,
        progress: Progress | None = None,
        known: ImageEmbedding | TiledEmbedding | None = None,
    ) -> ImageEmbedding | TiledEmbedding:
        """The embedding of a 2-D image (H, W) or (H, W, C): read if stored, else computed.

        known: the embedding of `image` already computed elsewhere (e.g. held in memory):
            written for missing tiles instead of running the encoder again."""
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ImageError(
                f"cache.embedding takes one 2-D image (H, W[, C]), got shape {image.shape}; "
                "use slice_embedding / compute_all for stacks"
            )
        layout = self._bind(image, "image", image.shape[:2])
        return self._entry(image, 0, layout, progress, (0, _tiles(layout)), known=known)

    def slice_embedding(
        self, volume: np.ndarray, index: int, progress: Progress | None = None
    ) -> ImageEmbedding | TiledEmbedding:
        """The embedding of volume[index] for a (Z, H, W) or (Z, H, W, C) stack/time series."""
        volume = _check_volume(volume)
        if not -volume.shape[0] <= index < volume.shape[0]:
            raise ImageError(f"slice {index} does not exist: the stack has {volume.shape[0]}")
        index %= volume.shape[0]
        layout = self._bind(volume, "stack", volume.shape[1:3])
        return self._entry(volume[index], index, layout, progress, (0, _tiles(layout)))

    def compute_all(self, volume: np.ndarray, progress: Progress | None = None) -> int:
        """Make sure every slice of a (Z, H, W[, C]) stack is stored; resumes where a previous
        run stopped. progress(tiles_done, tiles_total) counts stored tiles. Returns the number
        of tile embeddings computed now (0 when everything was stored already)."""
        volume = _check_volume(volume)
        layout = self._bind(volume, "stack", volume.shape[1:3])
        n_tiles = _tiles(layout)
        computed = 0
        for index in range(volume.shape[0]):
            counter = [0]
            self._entry(
                volume[index],
                index,
                layout,
                progress,
                (index * n_tiles, n_tiles * len(volume)),
                counter,
            )
            computed += counter[0]
        return computed

    # ------------------------------------------------------------------------- store setup
    def _bind(self, data: np.ndarray, kind: str, image_hw: Sequence[int]) -> TileLayout | None:
        """Open (or make, or rebuild) the store for `data`; returns the tile layout or None."""
        layout = self._layout(image_hw)
        wanted = self._identity(data, kind, layout)
        if self._group is not None and self._attrs == wanted:
            return layout
        n_entries = 1 if kind == "image" else int(data.shape[0])
        group = self._open_existing()
        if group is not None:
            stored = dict(group.attrs)
            diffs = [k for k in sorted(set(wanted) | set(stored)) if wanted.get(k) != stored.get(k)]
            if diffs:
                details = "; ".join(
                    f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}" for k in diffs
                )
                if self.on_mismatch == "error":
                    raise EmbeddingError(
                        f"embedding cache {self.path} was made for other inputs ({details}); "
                        "delete it or use on_mismatch='recompute'"
                    )
                _log.warning(
                    "embedding cache %s does not match (%s): recomputing", self.path, details
                )
                group = None
            elif not self._structure_ok(group, n_entries, _tiles(layout)):
                group = None
        if group is None:
            group = self._create(wanted, n_entries, _tiles(layout))
        self._group, self._attrs = group, wanted
        return layout

    def _layout(self, image_hw: Sequence[int]) -> TileLayout | None:
        if self.tile_shape is not None:
            return TileLayout.for_shape(image_hw, self.tile_shape, self.halo)
        if needs_tiling(image_hw, self.max_side):
            return TileLayout.for_shape(image_hw, DEFAULT_TILE_SHAPE, self.halo)
        return None

    def _identity(self, data: np.ndarray, kind: str, layout: TileLayout | None) -> dict:
        # Rehash only another array; a cheap sample catches new data at a reused address.
        sample = np.ascontiguousarray(data.flat[:: max(1, data.size // 65536)])
        key = (id(data), data.shape, data.dtype.str, zlib.crc32(sample.data))
        if key not in self._hashes:
            self._hashes = {key: data_hash(data)}  # remember only the latest array
        from . import __version__

        model = self.predictor.model
        channels = self.channels
        if channels is not None and not isinstance(channels, int):
            channels = [int(c) for c in channels]
        return {
            "format": FORMAT_VERSION,
            "samscope_version": __version__,
            "model": {
                "name": self.predictor.model_name,
                "weights_sha256": _weights_sha256(model),
                "precision": self.predictor.precision,
            },
            "data": {
                "kind": kind,
                "shape": [int(s) for s in data.shape],
                "dtype": data.dtype.str,
                "sha256": self._hashes[key],
            },
            "tiling": None if layout is None else layout.to_dict(),
            "preprocessing": {"channels": channels, "normalization": self.normalization},
        }

    def _open_existing(self):
        """The existing store, or None if there is none or its group metadata is unreadable."""
        import zarr

        if not self.path.exists():
            return None
        self._check_is_ours()
        try:
            group = zarr.open_group(store=str(self.path), mode="r+", zarr_format=3)
            dict(group.attrs)
        except Exception as exc:  # garbled zarr.json: zarr raises many types
            self._note_repair(f"store metadata unreadable ({type(exc).__name__}: {exc}); rebuilt")
            return None
        return group

    def _structure_ok(self, group, n_entries: int, n_tiles: int) -> bool:
        expected = {
            "features": ((n_entries, n_tiles, *FEATURE_SHAPE), np.float32),
            "original_hw": ((n_entries, n_tiles, 2), np.int32),
            "input_hw": ((n_entries, n_tiles, 2), np.int32),
            "checksum": ((n_entries, n_tiles), np.uint32),
            "done": ((n_entries, n_tiles), np.uint8),
        }
        try:
            for name, (shape, dtype) in expected.items():
                array = group[name]
                if tuple(array.shape) != shape or array.dtype != np.dtype(dtype):
                    raise ValueError(f"{name} is {array.dtype} {tuple(array.shape)}")
        except Exception as exc:
            self._note_repair(f"store arrays damaged ({type(exc).__name__}: {exc}); rebuilt")
            return False
        return True

    def _check_is_ours(self) -> None:
        if not self.path.is_dir():
            raise EmbeddingError(f"embedding cache path {self.path} exists and is not a folder")
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in _KNOWN_ENTRIES)
        if foreign:
            raise EmbeddingError(
                f"{self.path} exists and does not look like an embedding cache (it holds "
                f"{', '.join(foreign[:5])}); choose another path"
            )

    def _create(self, attrs: dict, n_entries: int, n_tiles: int):
        import zarr

        if self.path.exists():
            self._check_is_ours()
            shutil.rmtree(self.path)
        group = zarr.create_group(store=str(self.path), zarr_format=3, attributes=attrs)
        per_tile = (1, n_tiles)
        group.create_array(
            "features",
            shape=(n_entries, n_tiles, *FEATURE_SHAPE),
            chunks=(1, 1, *FEATURE_SHAPE),
            dtype="float32",
            compressors=None,
            fill_value=0.0,
        )
        for name in ("original_hw", "input_hw"):
            group.create_array(
                name,
                shape=(n_entries, n_tiles, 2),
                chunks=(*per_tile, 2),
                dtype="int32",
                fill_value=0,
                compressors=None,
            )
        group.create_array(
            "checksum",
            shape=(n_entries, n_tiles),
            chunks=per_tile,
            dtype="uint32",
            fill_value=0,
            compressors=None,
        )
        group.create_array(
            "done",
            shape=(n_entries, n_tiles),
            chunks=per_tile,
            dtype="uint8",
            fill_value=0,
            compressors=None,
        )
        return group

    def _note_repair(self, message: str) -> None:
        text = f"embedding cache {self.path}: {message}"
        self.repairs.append(text)
        _log.warning(text)

    # ------------------------------------------------------------------------ entries
    def _entry(self, image2d, index, layout, progress, span, counter=None, known=None):
        """Read entry `index` (computing missing or damaged tiles) → the embedding."""
        tiles = [None] if layout is None else list(layout.tiles)
        rows = self._read_rows(index, len(tiles))
        source = None
        embeddings = []
        start, total = span
        for t, tile in enumerate(tiles):
            expected_hw = tuple(image2d.shape[:2]) if tile is None else tile.outer_hw
            embedding = self._read_tile(index, t, rows, expected_hw)
            if embedding is None:
                if known is not None:
                    embedding = known if tile is None else known.embeddings[t]
                elif tile is None:
                    embedding = self.predictor.compute_embedding(
                        image2d, self.channels, self.normalization
                    )
                else:
                    if source is None:
                        source = TileSource(image2d, self.channels, self.normalization)
                    embedding = embed_tile(self.predictor, source, tile)
                self._write_tile(index, t, rows, embedding)
                if counter is not None:
                    counter[0] += 1
            embeddings.append(embedding)
            if progress is not None:
                progress(start + t + 1, total)
        if layout is None:
            return embeddings[0]
        return TiledEmbedding(layout, tuple(embeddings), self.predictor.model_name)

    def _read_rows(self, index: int, n_tiles: int) -> dict[str, np.ndarray]:
        """The small per-tile records of entry `index`; a damaged row counts as not done."""
        group = self._group
        try:
            rows = {name: np.asarray(group[name][index]) for name in _ARRAYS[1:]}
        except Exception as exc:
            self._note_repair(f"entry {index}: records unreadable ({exc}); recomputing it")
            rows = {
                "original_hw": np.zeros((n_tiles, 2), np.int32),
                "input_hw": np.zeros((n_tiles, 2), np.int32),
                "checksum": np.zeros(n_tiles, np.uint32),
                "done": np.zeros(n_tiles, np.uint8),
            }
        return rows

    def _read_tile(self, index, t, rows, expected_hw) -> ImageEmbedding | None:
        if not rows["done"][t]:
            return None
        original_hw = tuple(int(v) for v in rows["original_hw"][t])
        input_hw = tuple(int(v) for v in rows["input_hw"][t])
        geometry = ImageGeometry.for_shape(expected_hw)
        problem = None
        if (original_hw, input_hw) != (geometry.original_hw, geometry.input_hw):
            problem = f"geometry {original_hw}->{input_hw} does not fit a {expected_hw} image"
        else:
            try:
                features = np.asarray(self._group["features"][index, t], dtype=np.float32)
                if features.shape != FEATURE_SHAPE:
                    problem = f"features have shape {features.shape}"
                elif zlib.crc32(np.ascontiguousarray(features).data) != int(rows["checksum"][t]):
                    problem = "features fail their checksum"
            except Exception as exc:  # truncated or garbled chunk
                problem = f"features unreadable ({type(exc).__name__})"
        if problem is not None:
            self._note_repair(f"entry {index} tile {t}: {problem}; recomputing it")
            rows["done"][t] = 0
            return None
        tensor = torch.from_numpy(features.copy())[None].to(self.predictor.device)
        return ImageEmbedding(tensor, geometry, self.predictor.model_name)

    def _write_tile(self, index, t, rows, embedding: ImageEmbedding) -> None:
        """Features first, then the records, then the done flag (rows are whole chunks)."""
        group = self._group
        features = embedding.features[0].detach().float().cpu().numpy()
        features = np.ascontiguousarray(features)
        group["features"][index, t] = features
        rows["original_hw"][t] = embedding.geometry.original_hw
        rows["input_hw"][t] = embedding.geometry.input_hw
        rows["checksum"][t] = zlib.crc32(features.data)
        for name in ("original_hw", "input_hw", "checksum"):
            group[name][index] = rows[name]
        rows["done"][t] = 1
        group["done"][index] = rows["done"]


def _tiles(layout: TileLayout | None) -> int:
    return 1 if layout is None else len(layout)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4):
        raise ImageError(
            f"a stack must be (Z, H, W) or (Z, H, W, C), got shape {volume.shape}; "
            "use cache.embedding for one 2-D image"
        )
    if volume.shape[0] == 0:
        raise ImageError("the stack has no slices")
    return volume


def _weights_sha256(model) -> str | None:
    sha = getattr(model, "checkpoint_sha256", None)
    if sha is None and getattr(model, "checkpoint_path", None) is not None:
        from .loading import weights_fingerprint

        sha = weights_fingerprint(model)
    return sha
