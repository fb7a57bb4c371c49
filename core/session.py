"""The one path from an image to masks, shared by every way into samscope.

The CLI, Dask batch runs, the napari plugin and the FiftyOne plugin (operators, panels and
``SamscopeModel``) are thin callers of this module, so an image and a prompt give the same mask
whichever way they come in:

    session = Session("vit_t")                        # shared, thread-safe predictor
    image = session.load("cells.tif", channels=2)     # or session.load(array)
    embedding = session.embed(image)                  # memory LRU → zarr cache → encoder
    masks, scores, logits = session.predict(embedding, points=[[x, y]], labels=[1])

What it owns:

* **Reading and interpreting** (`load`): files through `image_io.read_image_axes` (EXIF/TIFF
  orientation applied, axes metadata used), arrays through the one axes rule of
  `image_axes`; the result, `SessionImage`, says once whether the data is a plane or a stack and
  which channels and normalisation the model sees.
* **Embeddings** (`embed`): looked up in a process-wide memory LRU, then in the zarr cache
  folder (if the session has one), then computed. The key is `embedding_key`: a digest of the
  2-D plane's pixels after channel selection, the normalisation, the model's weights hash, the
  precision and the tiling; never a file's path, mtime or size, so two reads that yield other
  pixels (rotated, another channel, another normalisation) never share an embedding, and the
  same pixels reached by two front ends share one.
* **Tiling** (`tile_layout`): planes with a side above `max_side` pixels are embedded tile by
  tile (`sam_core.tiling`), also when they go through the zarr cache.
* **Models**: one `Predictor` per (model, device, precision) in the process, with one lock;
  every model call of every session runs under it.
* **Prediction** (`predict`): the same call for a whole-image `ImageEmbedding` and a
  `TiledEmbedding`.
* **Automatic-mask settings** (`automatic_settings`): official defaults, a fine-tuned model's
  searched thresholds from its ``model.json``, and what the user gave, resolved in one place.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import ImageEmbedding
from .errors import EmbeddingError, ImageError
from .image_axes import interpret_axes
from .image_input import Normalization, _select_channels, channel_choice
from .mask_geometry import best_mask_index
from .predictor import Predictor
from .registry import DEFAULT_MODEL
from .tiling import (
    DEFAULT_HALO,
    DEFAULT_MAX_SIDE,
    DEFAULT_TILE_SHAPE,
    TiledEmbedding,
    TiledPredictor,
    TileLayout,
    compute_tiled_embedding,
    layout_for,
)

__all__ = [
    "OFFICIAL_AUTOMATIC_SETTINGS",
    "Session",
    "SessionImage",
    "automatic_settings",
    "embedding_key",
    "get_predictor",
    "predictor_lock",
]

Progress = Callable[[int, int], None]
Embedding = ImageEmbedding | TiledEmbedding
Channels = int | Sequence[int] | None

# The automatic mask generator's settings a user may choose, with the official defaults.
OFFICIAL_AUTOMATIC_SETTINGS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 0,
}
_THRESHOLDS = ("pred_iou_thresh", "stability_score_thresh")


def automatic_settings(
    given: Mapping[str, Any] | None = None, model: str | None = None
) -> dict[str, Any]:
    """The automatic mask generator's settings for `model`, resolved once for every front end.

    given: what the user chose (None values count as not given; unknown names are ignored).
    Precedence: `given` > a fine-tuned model's searched thresholds (``model.json`` beside a
    ``.pth`` that ``samscope finetune`` wrote) > `OFFICIAL_AUTOMATIC_SETTINGS`.
    Returns a new dict with every key of `OFFICIAL_AUTOMATIC_SETTINGS`, values typed as the
    defaults, plus ``"thresholds_from"``: "given", "model.json" or "official".
    """
    settings = dict(OFFICIAL_AUTOMATIC_SETTINGS)
    source = "official"
    tuned = tuned_thresholds(model)
    if tuned:
        settings.update({k: tuned[k] for k in _THRESHOLDS})
        source = "model.json"
    for name, default in OFFICIAL_AUTOMATIC_SETTINGS.items():
        value = (given or {}).get(name)
        if value is not None:
            settings[name] = type(default)(value)
    if given and all(given.get(k) is not None for k in _THRESHOLDS):
        source = "given"
    settings["thresholds_from"] = source
    return settings


def tuned_thresholds(model: str | None) -> dict[str, float] | None:
    """A fine-tuned checkpoint's searched thresholds (pred_iou_thresh, stability_score_thresh)
    from its ``model.json``, or None (registry names, files without a card)."""
    if model is None or not Path(str(model)).suffix:
        return None
    from .training.checkpointing import automatic_thresholds

    return automatic_thresholds(str(model))


# ------------------------------------------------------------------------------ predictors
_PREDICTORS: dict[tuple[str, str, str], Predictor] = {}
_LOCKS: dict[int, threading.RLock] = {}
_REGISTRY_LOCK = threading.Lock()


def _model_key(model: str) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.suffix and path.exists() else str(model)


def get_predictor(
    model: str = DEFAULT_MODEL, device: str | None = "cpu", precision: str = "fp32"
) -> Predictor:
    """The process's `Predictor` for `model` (registry name or checkpoint path) on `device`
    ("cpu", "cuda", None for the best available) at `precision`, loaded on first use.

    Load it from a worker thread (a checkpoint may be downloaded). Use it under
    `predictor_lock(predictor)`: it holds the current image.
    """
    from .device import resolve_device
    from .loading import load_model

    resolved = str(resolve_device(device))
    key = (_model_key(model), resolved, precision)
    with _REGISTRY_LOCK:
        lock = _LOCKS.setdefault(hash(key), threading.RLock())
    with lock:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            predictor = Predictor(
                load_model(model, device="cpu"), device=resolved, precision=precision
            )
            with _REGISTRY_LOCK:
                _PREDICTORS[key] = predictor
                _LOCKS[id(predictor)] = lock
        return predictor


def use_predictor(model: str, predictor: Predictor) -> None:
    """Make an already built `predictor` the one `get_predictor(model, its device, its
    precision)` returns (e.g. a model a caller loaded itself)."""
    key = (_model_key(model), str(predictor.device), predictor.precision)
    with _REGISTRY_LOCK:
        _PREDICTORS[key] = predictor
        _LOCKS.setdefault(id(predictor), threading.RLock())


def loaded_predictors() -> int:
    """How many predictors this process has loaded (e.g. one per Dask worker)."""
    with _REGISTRY_LOCK:
        return len(_PREDICTORS)


def is_loaded(model: str, device: str | None = "cpu", precision: str = "fp32") -> bool:
    """Whether `get_predictor(model, device, precision)` would return without loading."""
    from .device import resolve_device

    key = (_model_key(model), str(resolve_device(device)), precision)
    with _REGISTRY_LOCK:
        return key in _PREDICTORS


def predictor_lock(predictor: Predictor) -> threading.RLock:
    """The lock every model call on `predictor` runs under (re-entrant)."""
    with _REGISTRY_LOCK:
        return _LOCKS.setdefault(id(predictor), threading.RLock())


# ------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class SessionImage:
    """An image as samscope interprets it: canonical axes, channel choice and normalisation.

    data: (H, W), (H, W, C), (Z, H, W) or (Z, H, W, C) array, any real dtype, as read.
    axes: "YX", "YXC", "ZYX" or "ZYXC" (see `sam_core.image_axes`).
    channels: the channel(s) the model sees (one: gray, three: RGB), or None for gray/RGB data
        (and uint8 RGBA, whose alpha is dropped).
    normalization: how non-uint8 intensities map to 0–255 (see `sam_core.image_input`); each
        plane of a stack is normalised on its own.
    source: the file it came from, for messages only (never part of a cache key).
    """

    data: np.ndarray
    axes: str
    channels: Channels = None
    normalization: Normalization = "auto"
    source: str | None = None

    @property
    def is_stack(self) -> bool:
        return self.axes.startswith("Z")

    @property
    def n_slices(self) -> int | None:
        return int(self.data.shape[0]) if self.is_stack else None

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) pixels of one plane."""
        offset = 1 if self.is_stack else 0
        return int(self.data.shape[offset]), int(self.data.shape[offset + 1])

    def plane(self, z: int | None = None) -> np.ndarray:
        """The (H, W) or (H, W, C) plane the model sees: the image, or slice `z` of a stack.

        Raises:
            ImageError: z missing for a stack, given for a 2-D image, or out of range.
        """
        if not self.is_stack:
            if z not in (None, 0):
                raise ImageError(f"slice {z} asked of a 2-D image {self._name()}")
            return self.data
        if z is None:
            raise ImageError(
                f"{self._name()} is a stack of {self.n_slices} slices {self.data.shape}; "
                "choose a slice (slice=/--slice Z)"
            )
        if not -self.n_slices <= int(z) < self.n_slices:
            raise ImageError(f"slice {z} is outside the stack of {self.n_slices} slices")
        return np.asarray(self.data[int(z)])

    def selected_plane(self, z: int | None = None) -> np.ndarray:
        """`plane(z)` with the channel choice applied: (H, W) for one channel or gray data,
        (H, W, 3) for RGB or three channels (alpha dropped); raw intensities, not normalised."""
        plane = np.asarray(self.plane(z))
        if self.axes.endswith("C"):
            plane = _select_channels(plane, self.channels)
            if plane.shape[-1] == 1:
                plane = plane[..., 0]
        return plane

    def _name(self) -> str:
        return self.source or "the image"


def as_session_image(
    image: np.ndarray | str | Path | SessionImage,
    channels: Channels = None,
    normalization: Normalization = "auto",
    axes: str | None = None,
) -> SessionImage:
    """Read a file or interpret an array once (see `Session.load`)."""
    if isinstance(image, SessionImage):
        return image
    source = None
    if isinstance(image, (str, Path)):
        from .image_io import read_image_axes

        source = str(image)
        data, canonical = read_image_axes(image, axes)
    else:
        from .image_input import _as_array_any_rank

        data = _as_array_any_rank(image)
        data, canonical = interpret_axes(data, axes)
    channels = _check_channels(data, canonical, channels, source)
    return SessionImage(data, canonical, channels, normalization, source)


def _check_channels(data, axes: str, channels: Channels, source: str | None) -> Channels:
    """Validate the channel choice now (not at the first click), with the file named."""
    where = f"{source}: " if source else ""
    if not axes.endswith("C"):
        if channels not in (None, 0, (0,), [0]):
            raise ImageError(f"{where}channels={channels!r} given for single-channel data {axes}")
        return None
    try:
        chosen = channel_choice(int(data.shape[-1]), channels, data.dtype)
    except ImageError as exc:
        raise ImageError(f"{where}{exc} (axes {axes}, shape {tuple(data.shape)})") from None
    if chosen is not None and len(chosen) == 1:
        return chosen[0]
    return chosen


# ------------------------------------------------------------------------------ the cache
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


class _EmbeddingLRU:
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


MEMORY_CACHE = _EmbeddingLRU()


# ------------------------------------------------------------------------------ session
class Session:
    """One model, its preprocessing rules and caches: the path image → embedding → masks.

    model: registry name ("vit_t", ...) or checkpoint path. device: "cpu", "cuda", None (best
        available). precision: "fp32", "bf16" or "fp16" (see `Predictor`).
    cache_dir: folder of zarr embedding stores (one per plane key, ``<key>.zarr``), shared by
        every front end and process; None keeps embeddings in memory only.
    max_side / tile_shape / halo: planes with a side above `max_side` pixels are embedded in
        tiles of `tile_shape` (yx pixels) with `halo` pixels of context (`sam_core.tiling`).

    Sessions are cheap: the predictor and the memory cache are shared by all sessions of the
    process, and every model call holds the predictor's lock, so sessions may be used from any
    thread (napari workers, two FiftyOne operators in one App process).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = "cpu",
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        tile_shape: tuple[int, int] = DEFAULT_TILE_SHAPE,
        halo: tuple[int, int] = DEFAULT_HALO,
        predictor: Predictor | None = None,
    ) -> None:
        self.model = str(model)
        self.device = device
        self.precision = precision
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.max_side = int(max_side)
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))
        self.halo = (int(halo[0]), int(halo[1]))
        self._predictor = predictor

    # ------------------------------------------------------------------------- model side
    @property
    def predictor(self) -> Predictor:
        """The shared `Predictor` (loaded on first use; call from a worker thread)."""
        if self._predictor is None:
            self._predictor = get_predictor(self.model, self.device, self.precision)
        return self._predictor

    @property
    def lock(self) -> threading.RLock:
        return predictor_lock(self.predictor)

    @property
    def model_id(self) -> str:
        """The weights' sha256 (registry models: the published hash; files: their content) and
        the model's name: embeddings carry the name and `Predictor.set_embedding` checks it,
        so a copy of vit_t's weights saved as model.pth must not reuse vit_t's embeddings."""
        from .embedding_cache import _weights_sha256

        return f"{_weights_sha256(self.predictor.model)}:{self.predictor.model_name}"

    # ------------------------------------------------------------------------- image side
    def load(
        self,
        image: np.ndarray | str | Path | SessionImage,
        channels: Channels = None,
        normalization: Normalization = "auto",
        axes: str | None = None,
    ) -> SessionImage:
        """Read a file (orientation and axes metadata applied) or take an array, and interpret
        its axes once (`sam_core.image_axes`).

        channels: channel(s) of multi-channel data the model sees (one → gray, three → RGB).
        axes: override the interpretation, e.g. "CYX" for channel-first data, "YXC" to force
            channels; letters as in `image_axes`.
        Raises:
            ImageError: unreadable file, unusable axes, a channel that doesn't exist, or
                multi-channel data (other than gray/RGB/RGBA) without a channel choice.
        """
        return as_session_image(image, channels, normalization, axes)

    def tile_layout(self, image_hw: Sequence[int]) -> TileLayout | None:
        """How a plane of (H, W) pixels is embedded: None whole, else its tile layout."""
        return layout_for(image_hw, self.tile_shape, self.halo, self.max_side)

    def embedding_key(self, image: SessionImage, z: int | None = None) -> str:
        plane = image.plane(z)
        layout = self.tile_layout(plane.shape[:2])
        return embedding_key(
            plane, image.channels, image.normalization, self.model_id, self.precision, layout
        )

    def cached_embedding(self, image: SessionImage, z: int | None = None) -> Embedding | None:
        """The embedding of `image` (slice `z`) if memory holds it, else None (no compute)."""
        return MEMORY_CACHE.get(self.embedding_key(image, z))

    def embed(
        self,
        image: SessionImage | np.ndarray,
        z: int | None = None,
        progress: Progress | None = None,
    ) -> Embedding:
        """The embedding of `image` (slice `z` of a stack): memory → zarr cache → encoder.

        Returns an `ImageEmbedding`, or a `TiledEmbedding` for planes above `max_side`.
        progress(done, total) is called per tile computed. Raises ImageError for bad input.
        """
        image = self.load(image) if not isinstance(image, SessionImage) else image
        plane = image.plane(z)
        layout = self.tile_layout(plane.shape[:2])
        key = embedding_key(
            plane, image.channels, image.normalization, self.model_id, self.precision, layout
        )
        embedding = MEMORY_CACHE.get(key)
        if embedding is not None:
            if self.cache_dir is not None and not (self.cache_dir / f"{key}.zarr").exists():
                with self.lock:  # computed before the cache folder was chosen: store it too
                    self._zarr_store(key, image, layout).embedding(plane, known=embedding)
            return embedding
        with self.lock:
            embedding = MEMORY_CACHE.get(key)  # another thread may have just computed it
            if embedding is None:
                embedding = self._read_or_compute(key, plane, image, layout, progress)
                MEMORY_CACHE.put(key, embedding)
        return embedding

    def _read_or_compute(self, key, plane, image, layout, progress) -> Embedding:
        if self.cache_dir is not None:
            return self._zarr_store(key, image, layout).embedding(plane, progress=progress)
        if layout is None:
            embedding = self.predictor.compute_embedding(plane, image.channels, image.normalization)
            if progress is not None:
                progress(1, 1)
            return embedding
        return compute_tiled_embedding(
            self.predictor, plane, layout, progress, image.channels, image.normalization
        )

    def _zarr_store(self, key: str, image: SessionImage, layout: TileLayout | None):
        """The `EmbeddingCache` store of one plane key in the cache folder."""
        from .embedding_cache import EmbeddingCache

        tiling = {"max_side": 1 << 30} if layout is None else {"tile_shape": layout.tile_shape}
        return EmbeddingCache(
            self.cache_dir / f"{key}.zarr",
            self.predictor,
            halo=self.halo,
            channels=image.channels,
            normalization=image.normalization,
            **tiling,
        )

    # ------------------------------------------------------------------------ prompt side
    def predict(
        self,
        embedding: Embedding,
        points: object = None,
        labels: object = None,
        box: object = None,
        mask_input: object = None,
        multimask: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on an embedding from `embed`, whole or tiled.

        Prompts are in pixels of the plane, (x, y) = (column, row), as `Predictor.predict`
        (points (N, 2) + labels (N,), box (4,) x0 y0 x1 y1, batches with a leading B axis).
        Returns masks (M, H, W) bool (float32 logits with return_logits), scores (M,), low-res
        logits (M, 256, 256); M = 3 with `multimask`, else 1; a leading B axis for batches.
        Raises PromptError for prompts outside the image.
        """
        with self.lock:
            if isinstance(embedding, TiledEmbedding):
                target = TiledPredictor(self.predictor, embedding)
            else:
                if embedding.model_name != self.predictor.model_name:
                    raise EmbeddingError(
                        f"embedding was computed by {embedding.model_name!r}, "
                        f"not by this session's {self.predictor.model_name!r}"
                    )
                self.predictor.set_embedding(embedding)
                target = self.predictor
            return target.predict(points, labels, box, mask_input, multimask, return_logits)

    def predict_best(
        self, embedding: Embedding, points: object = None, labels: object = None, box: object = None
    ) -> tuple[np.ndarray, float]:
        """One object's mask by SAM's rule for one prompt: a single click is ambiguous, so ask
        for 3 masks and keep the most confident that is not nearly the whole frame
        (`mask_geometry.best_mask_index`); several points or a box ask for one.

        Returns ((H, W) bool mask, predicted IoU)."""
        n_points = 0 if points is None else int(np.asarray(points).reshape(-1, 2).shape[0])
        multimask = box is None and n_points == 1
        masks, scores, _ = self.predict(embedding, points, labels, box, multimask=multimask)
        best = best_mask_index(masks, scores)
        return masks[best], float(scores[best])

    # ---------------------------------------------------------------------- automatic masks
    def automatic_generator(self, **given: Any):
        """An `AutomaticMaskGenerator` on this session's predictor, settings resolved by
        `automatic_settings` (the user's, else a tuned model's, else the official), with this
        session's tiling. Extra generator arguments (output_mode, ...) pass through."""
        from .automatic import AutomaticMaskGenerator

        resolved = automatic_settings(given, self.model)
        resolved.pop("thresholds_from")
        extra = {k: v for k, v in given.items() if k not in resolved and v is not None}
        return AutomaticMaskGenerator(
            self.predictor,
            **resolved,
            **extra,
            halo=self.halo,
            tiling_threshold=self.max_side,
        )

    def generate(
        self,
        image: SessionImage | np.ndarray,
        z: int | None = None,
        generator=None,
        progress: Progress | None = None,
        **settings: Any,
    ) -> list[dict]:
        """Automatic-mask records of `image` (slice `z`), embeddings through `embed` when the
        generator embeds the plane whole or in this session's tiles (crop layers embed zoomed
        crops themselves)."""
        image = self.load(image) if not isinstance(image, SessionImage) else image
        generator = generator or self.automatic_generator(**settings)
        candidates = self.automatic_candidates(image, z, generator, progress)
        return generator.select(candidates)

    def automatic_candidates(self, image: SessionImage, z, generator, progress=None):
        """`generator.compute_candidates` on `image` (slice `z`), under the model lock."""
        plane = image.plane(z)
        hw = plane.shape[:2]
        embedding = None
        if generator.crop_n_layers == 0 and generator.tile_layout(hw) == self.tile_layout(hw):
            embedding = self.embed(image, z)
        with self.lock:
            return generator.compute_candidates(
                plane, embedding, image.channels, image.normalization, progress=progress
            )
