"""Turning what microscopists have into what SAM expects.

SAM takes an RGB image with values 0-255 whose longest side is resized to 1024 pixels. This
module validates user arrays and converts them:

* shapes: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB, ``(H, W, 4)`` uint8 RGBA
  (alpha dropped), or ``(H, W, C)`` with ``channels=`` choosing one channel (shown as gray) or
  three (shown as RGB). Grayscale is replicated to three channels, as the official code does.
* intensities: ``uint8`` is used as is (bit-identical to the official preprocessing). Every
  other dtype (uint16, int, float, bool) is mapped to 0-255 by percentile normalisation over
  the selected channels: the 1st percentile goes to 0 and the 99.8th to 255, values outside
  are clipped (robust to hot pixels and to the dark background of fluorescence images).
  ``normalization="minmax"`` uses the full range instead; ``"none"`` takes values as already
  0-255. A constant image maps to zeros (no division by zero).
* resizing: bilinear with antialiasing (Pillow), longest side to 1024, the shorter side
  rounded to nearest, exactly like the official ``ResizeLongestSide``. Only for very elongated
  images (aspect ratio above 64:1, e.g. line scans) do we differ: the shorter side is
  stretched to `MIN_INPUT_SIDE` (16) pixels, one patch of the image encoder, where the
  official code would give 0 pixels (a crash) or 1-15 pixels (masks mostly empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from .errors import ImageError

Normalization = Literal["auto", "percentile", "minmax", "none"]
PERCENTILES = (1.0, 99.8)
MODEL_INPUT_SIZE = 1024
# Shortest side of the resized model input, in pixels: one 16x16 patch of the image encoder
# (4 cells of the 256² mask grid). Thinner inputs leave a line scan below the model's
# resolution: on (1, 3000), (3000, 1) and (2, 3000) line scans MobileSAM's best mask for a
# click on a bright segment had IoU 0 with it at 1-4 px and IoU 1.0 at 8-64 px.
MIN_INPUT_SIDE = 16


@dataclass(frozen=True)
class ImageGeometry:
    """How an image maps to the model's input frame.

    original_hw: (H, W) of the user's image in pixels.
    input_hw: (h, w) after resizing so the longest side is 1024 (before padding to 1024²).
    """

    original_hw: tuple[int, int]
    input_hw: tuple[int, int]

    @classmethod
    def for_shape(
        cls, original_hw: tuple[int, int], long_side: int = MODEL_INPUT_SIZE
    ) -> ImageGeometry:
        """Geometry of an (H, W) image whose longest side is resized to `long_side` pixels.

        The shorter side is rounded to nearest like the official ``ResizeLongestSide``, but
        never below `MIN_INPUT_SIDE` pixels (nor above `long_side`): a line scan of shape
        (1, 3000) becomes (16, 1024), not (0, 1024). Each axis then has its own scale (see
        `scale_xy`), so prompts map to the input frame and masks back to (H, W).

        Raises:
            ImageError: a side is 0 (or negative) pixels.
        """
        h, w = (int(side) for side in original_hw)
        if min(h, w) < 1:
            raise ImageError(f"image is empty: shape {(h, w)}; each side needs at least 1 pixel")
        scale = long_side / max(h, w)
        min_side = min(MIN_INPUT_SIDE, long_side)
        input_hw = (max(min_side, int(h * scale + 0.5)), max(min_side, int(w * scale + 0.5)))
        return cls((h, w), input_hw)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Factors (sx, sy) from original pixels to input-frame pixels."""
        return self.input_hw[1] / self.original_hw[1], self.input_hw[0] / self.original_hw[0]

    def to_input_frame(self, coords_xy: np.ndarray) -> np.ndarray:
        """(..., 2) xy in original pixels → xy in the 1024 input frame (float32)."""
        sx, sy = self.scale_xy
        return (np.asarray(coords_xy, dtype=np.float64) * np.array([sx, sy])).astype(np.float32)


def as_rgb_uint8_or_float(
    image: np.ndarray,
    channels: int | Sequence[int] | None = None,
    normalization: Normalization = "auto",
) -> np.ndarray:
    """Validate `image` and return it as (H, W, 3) in 0-255: uint8, or float32 if not 8-bit."""
    array = _as_array(image)
    array = _select_channels(array, channels)  # (H, W, 1) or (H, W, 3)
    if array.dtype == np.uint8 and normalization in ("auto", "none"):
        scaled = array
    else:
        scaled = _normalize(array, normalization)
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return scaled


def resize_longest_side(rgb: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """(H, W, 3) uint8 or float32 → (h, w, 3) float32 at `geometry.input_hw`."""
    h, w = geometry.input_hw
    if rgb.dtype == np.uint8:
        if (
            rgb.shape[-1] == 3
            and np.array_equal(rgb[..., 0], rgb[..., 1])
            and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            gray = np.asarray(Image.fromarray(rgb[..., 0]).resize((w, h), Image.BILINEAR))
            return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
        resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.BILINEAR)
        return np.asarray(resized, dtype=np.float32)
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb[..., c], dtype=np.float32)).resize(
                (w, h), Image.BILINEAR
            )
        )
        for c in range(rgb.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def prepare_image(
    image: np.ndarray,
    channels: int | Sequence[int] | None = None,
    normalization: Normalization = "auto",
) -> tuple[np.ndarray, ImageGeometry]:
    """User image → ((h, w, 3) float32 0-255 resized for the model, its geometry)."""
    rgb = as_rgb_uint8_or_float(image, channels, normalization)
    geometry = ImageGeometry.for_shape(rgb.shape[:2])
    return resize_longest_side(rgb, geometry), geometry


def _as_array(image: object) -> np.ndarray:
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor
        image = image.detach().cpu().numpy()
    try:
        array = np.asarray(image)
    except Exception as exc:  # ragged lists and the like
        raise ImageError(f"image can't be read as an array: {exc}") from exc
    if array.dtype == object or array.dtype.kind in "USV":
        raise ImageError(f"image has dtype {array.dtype}; expected numbers")
    if array.dtype.kind == "c":
        raise ImageError("image is complex-valued; pass its magnitude or real part")
    if array.ndim not in (2, 3):
        hint = (
            " (a stack or time series? pass one 2-D slice, e.g. image[z])" if array.ndim > 3 else ""
        )
        raise ImageError(
            f"image has {array.ndim} dimensions {array.shape}; expected (H, W) or (H, W, C){hint}"
        )
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ImageError(f"image is empty: shape {array.shape}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise ImageError(
                f"image contains {int(bad.sum())} NaN or infinite values; "
                "replace them (e.g. np.nan_to_num) before segmenting"
            )
    return array


def _as_array_any_rank(image: object) -> np.ndarray:
    """`image` as a numpy array of real numbers with 2 to 5 dimensions (an image or a stack;
    `sam_core.image_axes` says which). NaN/inf are checked per plane when it is embedded.

    Raises:
        ImageError: not numeric, complex, fewer than 2 dimensions, or empty.
    """
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if _is_lazy_array(image):
        array = image  # dask / zarr: planes are read one at a time, when embedded
    else:
        try:
            array = np.asarray(image)
        except Exception as exc:  # ragged lists and the like
            raise ImageError(f"image can't be read as an array: {exc}") from exc
    dtype = np.dtype(array.dtype)
    if dtype.kind in "OUSV":
        raise ImageError(f"image has dtype {dtype}; expected numbers")
    if dtype.kind == "c":
        raise ImageError("image is complex-valued; pass its magnitude or real part")
    if array.ndim < 2:
        raise ImageError(f"image has {array.ndim} dimension(s) {array.shape}; expected (H, W)")
    if array.size == 0:
        raise ImageError(f"image is empty: shape {array.shape}")
    return array


def _is_lazy_array(image: object) -> bool:
    """A dask/zarr-like array (shape, dtype, slicing) that numpy would read whole."""
    return not isinstance(image, np.ndarray) and all(
        hasattr(image, name) for name in ("shape", "dtype", "ndim", "__getitem__")
    )


def channel_choice(
    n: int, channels: int | Sequence[int] | None, dtype: np.dtype | type = np.uint8
) -> tuple[int, ...] | None:
    """The channels the model sees of data with `n` channels on its last axis, validated.

    Returns None (use the data as it is: 1 or 3 channels) or a tuple of 1 or 3 channel
    indices; uint8 RGBA without a choice gives (0, 1, 2) (alpha dropped).
    Raises:
        ImageError: a channel that doesn't exist, not 1 or 3 channels named, or data with
            other than 1, 3 (or uint8 4) channels and no choice.
    """
    if channels is not None:
        chosen = [channels] if isinstance(channels, int | np.integer) else list(channels)
        if len(chosen) not in (1, 3):
            raise ImageError(f"channels must name 1 or 3 channels, got {chosen}")
        for c in chosen:
            if not -n <= int(c) < n:
                raise ImageError(f"channel {c} does not exist: the image has {n} channels")
        return tuple(int(c) for c in chosen)
    if n in (1, 3):
        return None
    if n == 4 and np.dtype(dtype) == np.uint8:
        return (0, 1, 2)  # RGBA: drop alpha
    raise ImageError(
        f"image has {n} channels; choose a channel (channels=N; CLI --channel N; napari: the "
        "'channel' box) or three shown as RGB (channels=(0, 1, 2))"
    )


def _select_channels(array: np.ndarray, channels: int | Sequence[int] | None) -> np.ndarray:
    """→ (H, W, 1) or (H, W, 3)."""
    if array.ndim == 2:
        if channels not in (None, 0, (0,), [0]):
            raise ImageError(f"channels={channels!r} given for a single-channel (H, W) image")
        return array[..., None]
    n = array.shape[-1]
    if channels is None and n > 4 and array.shape[0] in (1, 3, 4):
        raise ImageError(
            f"image of shape {array.shape} looks channel-first; "
            "move channels last (np.moveaxis(image, 0, -1))"
        )
    try:
        chosen = channel_choice(n, channels, array.dtype)
    except ImageError as exc:
        raise ImageError(f"{exc} (shape {array.shape})") from None
    return array if chosen is None else array[..., list(chosen)]


def _normalize(array: np.ndarray, normalization: Normalization) -> np.ndarray:
    values = array.astype(np.float32)
    if normalization == "none":
        if values.min() < 0 or values.max() > 255:
            raise ImageError(
                f"normalization='none' needs values in 0-255, got {values.min()}..{values.max()}"
            )
        return values
    if normalization in ("auto", "percentile"):
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))  # keep float32 math
        if hi <= lo:  # nearly constant: fall back to the full range
            lo, hi = float(values.min()), float(values.max())
    elif normalization == "minmax":
        lo, hi = float(values.min()), float(values.max())
    else:
        raise ImageError(f"unknown normalization {normalization!r}")
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
