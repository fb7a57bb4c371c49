"""Which 2-D plane of a napari image layer the model sees (no viewer needed).

napari only adds one fact to core's reading rules: a layer's `rgb` flag says its last axis is
colour. Everything else (channels vs stack, channel choice, normalisation) is core's one rule,
`sam_core.session.SessionImage` / `sam_core.image_axes`, so a layer and the same array or file
given to the CLI or FiftyOne are read the same way:

  (H, W)              2-D gray            (H, W, 3|4) rgb   2-D colour (alpha dropped)
  (Z, H, W)           stack of gray       (Z, H, W, 3|4) rgb stack of colour
  (H, W, C) / (Z, H, W, C) with C channels on the last axis (C <= 16): `channel` picks one.
Z is any leading axis (depth or time); only one is supported. Dask/zarr layer data is read one
plane at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_core.session import SessionImage, as_session_image


@dataclass(frozen=True)
class ImageLayout:
    """spatial_hw: (H, W) pixels; n_slices: Z (None for a 2-D image)."""

    spatial_hw: tuple[int, int]
    n_slices: int | None

    @property
    def labels_shape(self) -> tuple[int, ...]:
        hw = self.spatial_hw
        return hw if self.n_slices is None else (self.n_slices, *hw)


def session_image(
    data: object, rgb: bool, channel: int | tuple[int, ...] | None = None
) -> SessionImage:
    """A layer's data as core interprets it (raises ImageError with a hint for bad shapes)."""
    axes = None
    if rgb:
        axes = "ZYXC" if np.ndim(data) == 4 else "YXC"
        if channel is None and np.shape(data)[-1] == 4:
            channel = (0, 1, 2)  # napari shows RGBA of any dtype as colour: drop alpha
    return as_session_image(data, channels=channel, axes=axes)


def layout_of(shape: tuple[int, ...], rgb: bool, channel: int | None = None) -> ImageLayout:
    """Interpret a layer's data shape; raises ImageError with a hint for shapes we can't use."""
    image = session_image(_ShapeOnly(tuple(int(s) for s in shape)), rgb, channel)
    return ImageLayout(image.image_hw, image.n_slices)


def image_plane(data: object, rgb: bool, z: int | None, channel: int | None = None) -> np.ndarray:
    """The (H, W) or (H, W, 3) numpy plane of slice z (None for 2-D) with the channel choice
    applied (alpha dropped), raw intensities: what fine-tuning and propagation take."""
    return session_image(data, rgb, channel).selected_plane(z)


class _ShapeOnly:
    """An array stand-in that has a shape and nothing to read, for layout questions."""

    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.ndim = len(shape)
        self.size = int(np.prod(shape))

    def __getitem__(self, item):  # never read
        raise TypeError("shape-only stand-in")
