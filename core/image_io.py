"""Reading images from disk and writing masks, for the CLI and the plugins.

`read_image` keeps what the file holds: a uint16 TIFF stays uint16, a float TIFF stays float
(the predictor normalises non-8-bit data itself, see `sam_core.image_input`). TIFFs are read
with tifffile (first series, all its planes), everything else with Pillow (first frame):

* ``L`` → (H, W) uint8; ``I;16*`` → (H, W) uint16; ``I`` → int32; ``F`` → float32;
  ``1`` (bilevel) → uint8 0/255;
* ``RGB`` → (H, W, 3) uint8; ``RGBA``, ``LA``, ``PA`` and palette images with transparency
  lose their alpha channel (SAM sees colour only); palette images become RGB, or (H, W) gray
  when the palette is gray; CMYK/YCbCr/LAB/HSV JPEGs become RGB.

Orientation: a file's EXIF (JPEG, PNG, WebP) or TIFF orientation tag is applied, so pixels come
back the way viewers, FiftyOne and OpenCV display them (a phone JPEG stored 360×240 with
orientation 6 reads as 240 wide, 360 tall) and masks line up with what the user sees.

Axes: `read_image_axes` also returns the canonical axes (see `sam_core.image_axes`): a TIFF's
own axes metadata (ImageJ/OME ``CYX``, ``ZYX``, ``ZCYX``...) is used when it has some, else the
one shape rule of `image_axes`. `read_image` returns the array alone in that canonical order.

Files are never trusted: a missing, empty, truncated or unreadable file raises `ImageError`
naming it. Writes are atomic (a temporary file in the target folder, then ``os.replace``), so
a crash never leaves half a PNG behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .image_axes import interpret_axes, trusted_file_axes

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "read_image",
    "read_image_axes",
    "write_bytes",
    "write_mask_png",
    "write_png",
]

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", *TIFF_SUFFIXES)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The pixels of an image file as a numpy array, dtype kept, orientation applied, axes in
    canonical order ((H, W), (H, W, C), (Z, H, W) or (Z, H, W, C); see the module docstring).

    Raises:
        ImageError: the file does not exist, is empty, truncated, or not an image.
    """
    return read_image_axes(path)[0]


def read_image_axes(
    path: str | os.PathLike[str], axes: str | None = None
) -> tuple[np.ndarray, str]:
    """`read_image`'s array and its canonical axes ("YX", "YXC", "ZYX" or "ZYXC").

    axes: the user's names for the file's axes as stored (e.g. "CYX"), replacing the file's
        metadata and the shape rule.

    Raises:
        ImageError: as `read_image`, or the file's axes can't be used (e.g. two stack axes).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"image path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"image file is empty: {path}")
    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    array, file_axes = _read_tiff(path) if is_tiff else (_read_with_pillow(path), None)
    if array.size == 0:
        raise ImageError(f"image file holds no pixels: {path} (shape {array.shape})")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        array, canonical = interpret_axes(array, axes or file_axes)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc
    return np.ascontiguousarray(array), canonical


def _read_tiff(path: Path) -> tuple[np.ndarray, str | None]:
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile warns about odd tags; errors still raise
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = np.asarray(series.asarray())
                axes = trusted_file_axes(series.axes)
                orientation = _tiff_orientation(tif)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise ImageError(f"cannot read TIFF {path}: {_reason(exc)}") from exc
    if orientation not in (None, 1) and array.ndim in (2, 3):
        yx = (0, 1) if axes is None or axes.startswith("Y") else None
        if array.ndim == 2 or (axes is None and array.shape[-1] <= 4) or yx:
            array = _apply_orientation(array, orientation)
    return array, axes


def _tiff_orientation(tif) -> int | None:
    tag = tif.pages[0].tags.get("Orientation")
    return None if tag is None else int(tag.value)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W[, C]) as stored → as displayed, for EXIF/TIFF orientation 1–8."""
    flips = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    return flips[orientation](array) if orientation in flips else array


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so a truncated file fails here
            return _pillow_to_array(ImageOps.exif_transpose(img))
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"not an image file Pillow can read: {path}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refusing to open {path}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated / corrupt data
        raise ImageError(f"cannot read image {path}: {_reason(exc)}") from exc


def _pillow_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "I", "F", "RGB") or mode.startswith("I;16"):
        return np.asarray(img)  # I;16B comes big-endian; read_image makes it native
    if mode == "LA":
        return np.asarray(img.getchannel("L"))
    if mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGB"))
        gray = rgb[..., 0]
        if np.array_equal(gray, rgb[..., 1]) and np.array_equal(gray, rgb[..., 2]):
            return gray.copy()
        return rgb
    return np.asarray(img.convert("RGB"))  # RGBA, RGBX, CMYK, YCbCr, LAB, HSV


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# --------------------------------------------------------------------------------- writing


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write a 2-D mask as an 8-bit PNG: 255 where ``mask`` is true (or > 0), else 0."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ImageError(f"a mask must be 2-D (H, W), got shape {array.shape}")
    return write_png(path, np.where(array > 0, 255, 0).astype(np.uint8))


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write (H, W) or (H, W, 3/4) uint8 pixels as a PNG, atomically; parent folders are made."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ImageError(f"write_png needs (H, W[, C]) uint8, got {array.dtype} {array.shape}")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda stream: Image.fromarray(array).save(stream, format="PNG"))
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (e.g. a JSON summary); parent folders are made."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda stream: stream.write(data))
    return path


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(stream)`` on a temporary file next to ``path``, then move it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
