"""Where samscope's layers sit in napari's world: the image layer's transform, copied and inverted.

napari draws data pixel p of a layer at world position A·p, where A is the layer's scale,
translate, rotate, shear and affine. samscope works in the *image layer's data pixels*
((Z,) Y, X; the pixels `sam_core` segments). So

* every layer samscope creates (prompts, preview, target and automatic labels) gets the image's
  transform (`transform_kwargs`): its data pixels ARE the image's, whatever scale it is shown at;
* coordinates from a layer with another transform (a points layer the user made) are mapped
  data → world → image data (`to_image_pixels`).

"Spatial axes" are the image's first `ndim` axes: all of them for gray/RGB images and stacks,
all but the last for a channels-last image shown without `rgb` (its last axis is channels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sam_core.errors import PromptError

_TOL = 1e-9


def data_to_world_matrix(layer: Any) -> np.ndarray:
    """The layer's data → world transform as a homogeneous ((D+1), (D+1)) matrix (D: layer.ndim),
    in napari's axis order (…, y, x). Built from the public `layer.data_to_world` at the origin
    and the unit vectors, so it includes scale, translate, rotate, shear and affine."""
    ndim = int(layer.ndim)
    origin = np.asarray(layer.data_to_world(np.zeros(ndim)), dtype=np.float64)
    matrix = np.eye(ndim + 1)
    for axis in range(ndim):
        unit = np.zeros(ndim)
        unit[axis] = 1.0
        matrix[:ndim, axis] = np.asarray(layer.data_to_world(unit), dtype=np.float64) - origin
    matrix[:ndim, ndim] = origin
    return matrix


def spatial_matrix(image: Any, ndim: int) -> np.ndarray:
    """data → world matrix ((ndim+1)²) of the image's first `ndim` (spatial/stack) axes.

    Raises PromptError when the image's transform mixes its channel axis with the others
    (a rotation or shear involving the channel axis): such an image has no 2-D placement."""
    full = data_to_world_matrix(image)
    extra = int(image.ndim) - ndim
    if extra == 0:
        return full
    if extra != 1:
        raise PromptError(f"image layer has {image.ndim} axes; samscope uses {ndim} of them")
    coupled = np.abs(full[ndim, :ndim]).max(initial=0) + np.abs(full[:ndim, ndim]).max(initial=0)
    if coupled > _TOL:
        raise PromptError(
            f"image layer {image.name!r} is rotated or sheared across its channel axis; "
            "reset its rotate/shear/affine or split the channels (channel_axis=-1)"
        )
    keep = [*range(ndim), ndim + 1]
    return full[np.ix_(keep, keep)]


def transform_kwargs(image: Any, ndim: int) -> dict[str, np.ndarray]:
    """Keyword arguments (scale, translate, rotate, shear, affine) that give a new `ndim`-axis
    layer the image layer's placement, for `viewer.add_points/add_shapes/add_labels`.

    For an image with the same number of axes they are the image's own values; for a
    channels-last image, scale and translate of the first `ndim` axes plus an `affine` for
    any rotation/shear/affine it has. Raises PromptError (see `spatial_matrix`)."""
    if int(image.ndim) == ndim:
        return {
            "scale": np.array(image.scale, dtype=np.float64),
            "translate": np.array(image.translate, dtype=np.float64),
            "rotate": np.array(image.rotate, dtype=np.float64),
            "shear": np.array(image.shear, dtype=np.float64),
            "affine": np.array(image.affine.affine_matrix, dtype=np.float64),
        }
    wanted = spatial_matrix(image, ndim)
    scale = np.array(image.scale[:ndim], dtype=np.float64)
    translate = np.array(image.translate[:ndim], dtype=np.float64)
    plain = np.eye(ndim + 1)
    plain[:ndim, :ndim] = np.diag(scale)
    plain[:ndim, ndim] = translate
    return {
        "scale": scale,
        "translate": translate,
        "rotate": np.eye(ndim),
        "shear": np.zeros(ndim * (ndim - 1) // 2),
        "affine": wanted @ np.linalg.inv(plain),
    }


def apply_transform(layer: Any, kwargs: dict[str, np.ndarray]) -> None:
    """Set `transform_kwargs` on an existing layer (e.g. after the image was moved)."""
    for name in ("scale", "translate", "rotate", "shear", "affine"):
        setattr(layer, name, kwargs[name])


def same_placement(layer: Any, image: Any, ndim: int) -> bool:
    """True when `layer` has `ndim` axes placed exactly as the image's spatial axes, i.e. its
    data coordinates are image data pixels."""
    if int(layer.ndim) != ndim:
        return False
    return bool(np.allclose(data_to_world_matrix(layer), spatial_matrix(image, ndim), atol=1e-7))


def to_image_pixels(
    coords: np.ndarray, layer: Any, image: Any, ndim: int, world_point: tuple[float, ...]
) -> np.ndarray:
    """Coordinates (N, layer.ndim) in `layer`'s data frame → (N, ndim) image data pixels
    ((z,) y, x; not rounded).

    A layer placed like the image (all layers samscope creates) is passed through unchanged.
    Others go through world coordinates, aligned on the trailing axes as napari draws them;
    axes the layer lacks (a 2-D points layer over a stack) take the viewer's current
    position `world_point` (`viewer.dims.point`). Raises PromptError for a channels-last image
    (napari draws its channel axis as a spatial one, so world positions don't map back)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, int(layer.ndim))
    if same_placement(layer, image, ndim):
        return coords
    if int(image.ndim) != ndim:
        raise PromptError(
            f"layer {layer.name!r} is placed differently from the channels-last image "
            f"{image.name!r}; draw prompts in samscope's own layers"
        )
    layer_matrix, image_matrix = data_to_world_matrix(layer), data_to_world_matrix(image)
    k = int(layer.ndim)
    world = np.tile(np.asarray(world_point, dtype=np.float64), (len(coords), 1))
    if world.shape[1] < max(k, ndim):
        pad = max(k, ndim) - world.shape[1]
        world = np.hstack([np.zeros((len(coords), pad)), world])
    layer_world = coords @ layer_matrix[:k, :k].T + layer_matrix[:k, k]
    world[:, world.shape[1] - k :] = layer_world
    image_world = world[:, world.shape[1] - ndim :]
    inverse = np.linalg.inv(image_matrix)
    return image_world @ inverse[:ndim, :ndim].T + inverse[:ndim, ndim]


def world_to_image_pixels(image: Any, world_position: tuple[float, ...], ndim: int) -> np.ndarray:
    """A world position (e.g. a mouse event's `position`) → (ndim,) image data pixels
    ((z,) y, x; not rounded), through the image layer's own inverse transform."""
    return np.asarray(image.world_to_data(np.asarray(world_position)), dtype=np.float64)[:ndim]
