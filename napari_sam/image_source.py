"""Which 2-D plane of a napari image layer the model sees (no viewer needed).

Layouts understood, from the layer's data shape and its `rgb` flag:
  (H, W)              2-D gray            (H, W, 3|4) rgb   2-D colour (alpha dropped)
  (Z, H, W)           stack of gray       (Z, H, W, 3|4) rgb stack of colour
  (..., C) with `channel` set: the last axis holds C channels and `channel` picks one.
Z is any leading axis (depth or time); only one is supported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_core.errors import ImageError


@dataclass(frozen=True)
class ImageLayout:
    """spatial_hw: (H, W) pixels; n_slices: Z (None for a 2-D image)."""

    spatial_hw: tuple[int, int]
    n_slices: int | None

    @property
    def labels_shape(self) -> tuple[int, ...]:
        hw = self.spatial_hw
        return hw if self.n_slices is None else (self.n_slices, *hw)


def layout_of(shape: tuple[int, ...], rgb: bool, channel: int | None = None) -> ImageLayout:
    """Interpret a layer's data shape; raises ImageError with a hint for shapes we can't use."""
    shape = tuple(int(s) for s in shape)
    core = shape[:-1] if (rgb or channel is not None) else shape
    if channel is not None and not -shape[-1] <= channel < shape[-1]:
        raise ImageError(f"channel {channel} does not exist: the last axis has {shape[-1]}")
    # e.g. (256, 256, 5): a short last axis after a long one holds channels, not pixels
    short_last = len(shape) >= 3 and 1 < shape[-1] <= 8 and shape[-2] >= 8 * shape[-1]
    if not rgb and channel is None and short_last:
        raise ImageError(
            f"image of shape {shape} looks like it has {shape[-1]} channels on its last "
            "axis; choose a channel in the 'channel' box"
        )
    if len(core) == 2:
        return ImageLayout(core, None)
    if len(core) == 3:
        return ImageLayout(core[1:], core[0])
    raise ImageError(
        f"image of shape {shape} has {len(core)} spatial/time axes; samscope handles 2-D "
        "images and one stack axis (Z, H, W). Split the other axes into separate layers."
    )


def image_plane(data: object, rgb: bool, z: int | None, channel: int | None = None) -> np.ndarray:
    """The (H, W) or (H, W, 3) numpy plane for the model (dask/zarr data is read here)."""
    layout = layout_of(np.shape(data), rgb, channel)
    if layout.n_slices is not None:
        if z is None or not 0 <= z < layout.n_slices:
            raise ImageError(f"slice {z} is outside the stack of {layout.n_slices} slices")
        data = data[z]
    plane = np.asarray(data)
    if channel is not None:
        plane = plane[..., channel]
    elif rgb and plane.shape[-1] == 4:
        plane = plane[..., :3]
    return plane
