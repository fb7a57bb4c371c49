"""An image as samscope interprets it, once, for every front end: `SessionImage`.

Files go through `image_io.read_image_axes` (orientation, full depth, axes metadata), arrays
through the one axes rule of `image_axes`; the channel choice is checked at once, naming the
file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .image_axes import interpret_axes
from .image_input import Normalization, _select_channels, channel_choice

__all__ = ["Channels", "SessionImage", "as_session_image"]

Channels = int | Sequence[int] | None


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
