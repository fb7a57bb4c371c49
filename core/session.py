"""The one path from an image to masks, shared by every way into samscope.

The CLI, Dask batch runs, the napari plugin and the FiftyOne plugin (operators, panels and
``SamscopeModel``) are thin callers of this module, so an image and a prompt give the same mask
whichever way they come in:

    session = Session("vit_t")                        # shared, thread-safe predictor
    image = session.load("cells.tif", channels=2)     # or session.load(array)
    embedding = session.embed(image)                  # memory LRU → zarr cache → encoder
    masks, scores, logits = session.predict(embedding, points=[[x, y]], labels=[1])

What it owns:

* **Reading and interpreting** (`load`, `sam_core.session_image`): files through
  `image_io.read_image_axes` (EXIF/TIFF orientation applied, axes metadata used), arrays
  through the one axes rule of `image_axes`; the result, `SessionImage`, says once whether the
  data is a plane or a stack and which channels and normalisation the model sees.
* **Embeddings** (`embed`): looked up in a process-wide memory LRU, then in the zarr cache
  folder (if the session has one), then computed. The key is `embedding_key`
  (`sam_core.embedding_keys`): a digest of the 2-D plane's pixels after channel selection, the
  normalisation, the model's weights hash, the precision and the tiling; never a file's path,
  mtime or size, so two reads that yield other pixels (rotated, another channel, another
  normalisation) never share an embedding, and the same pixels reached by two front ends
  share one.
* **Tiling** (`tile_layout`): planes with a side above `max_side` pixels are embedded tile by
  tile (`sam_core.tiling`), also when they go through the zarr cache.
* **Models** (`sam_core.predictors`): one `Predictor` per (model, device, precision) in the
  process, with one lock; every model call of every session runs under it.
* **Prediction** (`predict`): the same call for a whole-image `ImageEmbedding` and a
  `TiledEmbedding`.
* **Automatic-mask settings** (`sam_core.automatic_settings`): official defaults, a fine-tuned
  model's searched thresholds from its ``model.json``, and what the user gave, in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .automatic_settings import OFFICIAL_AUTOMATIC_SETTINGS, automatic_settings, tuned_thresholds
from .embedding_keys import MEMORY_CACHE, Embedding, embedding_key, plane_digest
from .errors import EmbeddingError
from .image_input import Normalization
from .mask_geometry import best_mask_index
from .predictor import Predictor
from .predictors import (
    get_predictor,
    is_loaded,
    loaded_predictors,
    predictor_lock,
    use_predictor,
)
from .registry import DEFAULT_MODEL
from .session_image import Channels, SessionImage, as_session_image
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
    "MEMORY_CACHE",
    "OFFICIAL_AUTOMATIC_SETTINGS",
    "Channels",
    "Session",
    "SessionImage",
    "as_session_image",
    "automatic_settings",
    "embedding_key",
    "get_predictor",
    "is_loaded",
    "loaded_predictors",
    "plane_digest",
    "predictor_lock",
    "tuned_thresholds",
    "use_predictor",
]

Progress = Callable[[int, int], None]


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
        key: str | None = None,
    ) -> Embedding:
        """The embedding of `image` (slice `z` of a stack): memory → zarr cache → encoder.

        Returns an `ImageEmbedding`, or a `TiledEmbedding` for planes above `max_side`.
        progress(done, total) is called per tile computed. key: this plane's
        `embedding_key`, when the caller has just computed it (hashing a large plane's pixels
        takes time). Raises ImageError for bad input.
        """
        image = self.load(image) if not isinstance(image, SessionImage) else image
        plane = image.plane(z)
        layout = self.tile_layout(plane.shape[:2])
        if key is None:
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

    # -------------------------------------------------------- instance decoder (issue 15)
    def instance_segment(
        self,
        image: SessionImage | np.ndarray | str | Path,
        z: int | None = None,
        mode: str = "decoder",
        decoder: Any = None,
        thresholds: Any = None,
        prompts: Any = None,
        output_mode: str = "binary_mask",
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, list[dict]]:
        """Automatic instance masks of `image` (slice `z`) by a trained instance decoder.

        mode: "decoder" (maps + seeded watershed) or "decoder+prompts" (one SAM prompt per
            object, filtered and de-duplicated). decoder: a `LoadedDecoder`, a decoder file, or
            None for the one the ``model.json`` beside this session's model lists.
        thresholds: `InstanceThresholds` (default: the decoder's); prompts: `PromptSettings`.
        Returns ((H, W) uint32 labels, id i + 1 = records[i]; records like the automatic
        generator's). Maps are cached per plane, so new thresholds skip the network.
        Raises InstanceDecoderError (no decoder, or one trained on other weights),
        InstanceModeError (unknown mode). See `sam_core.instance`.
        """
        from .instance import segment_instances

        return segment_instances(
            self, image, z, mode, decoder, thresholds, prompts, output_mode, progress
        )
