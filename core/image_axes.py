"""One rule for what the axes of an image array mean: channels, a stack, or both.

Every way into samscope (API, CLI, napari, FiftyOne) interprets arrays with `interpret_axes`,
so a file is read the same way everywhere. The canonical layouts are

    "YX"     (H, W)            one gray plane
    "YXC"    (H, W, C)         one plane with C channels (RGB, or C fluorescence channels)
    "ZYX"    (Z, H, W)         a stack of gray planes (depth, time or any series)
    "ZYXC"   (Z, H, W, C)      a stack of multi-channel planes

**The rule** for an array without axes metadata: the last axis holds channels when it has at
most `MAX_CHANNELS` (16) entries *and* fewer entries than each of the two axes before it;
otherwise the array is a stack (its first axis is Z) or a plain 2-D image. So (96, 128, 5) is a
5-channel image, (30, 512, 512) a stack of 30 planes, (2, 3000) a 2-row line scan and
(512, 512, 3) RGB. Channel-first data ((C, H, W)) reads as a stack of C planes; say otherwise
with ``axes="CYX"`` (CLI ``--axes CYX``). Files that name their axes (ImageJ or OME TIFF
metadata, e.g. ``CYX`` or ``ZYX``, an RGB photometric tag) are read by their metadata instead.

Axis letters: Y, X (pixels); C or S (channels / samples); Z, T, I, Q or any other letter (a
stack axis; at most one that is longer than 1).
"""

from __future__ import annotations

import numpy as np

from .errors import ImageError

__all__ = ["CANONICAL_AXES", "MAX_CHANNELS", "guess_axes", "interpret_axes"]

MAX_CHANNELS = 16
CANONICAL_AXES = ("YX", "YXC", "ZYX", "ZYXC")
_CHANNEL_LETTERS = "CS"


def guess_axes(shape: tuple[int, ...]) -> str:
    """The axes the rule above gives an array of `shape` (no metadata), e.g. "ZYX".

    Raises:
        ImageError: fewer than 2 or more than 4 dimensions.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if _channels_last(shape) else "ZYX"
    if len(shape) == 4:
        if _channels_last(shape):
            return "ZYXC"
        raise ImageError(
            f"4-D data {shape} has no channel axis last (<= {MAX_CHANNELS}); samscope handles "
            "one stack axis: split the others, or name the axes (axes='ZCYX', CLI --axes)"
        )
    raise ImageError(
        f"{len(shape)}-D data {shape}: samscope reads 2-D images (H, W), "
        "multi-channel images (H, W, C) and stacks (Z, H, W[, C])"
    )


def _channels_last(shape: tuple[int, ...]) -> bool:
    c = shape[-1]
    return c <= MAX_CHANNELS and c < shape[-2] and c < shape[-3]


def interpret_axes(array: np.ndarray, axes: str | None = None) -> tuple[np.ndarray, str]:
    """`array` rearranged to a canonical layout, and that layout's name.

    array: any 2-D to 5-D array. axes: one letter per axis of `array` (e.g. "CYX", "ZCYX",
        "YXS"), from the user or the file's metadata; None applies the rule of this module.
        Length-1 axes other than Y and X are dropped.
    Returns (view or copy of the data, one of CANONICAL_AXES).

    Raises:
        ImageError: `axes` doesn't match the array, lacks Y or X, repeats a letter, or has two
            stack axes longer than 1.
    """
    if not hasattr(array, "shape"):
        array = np.asarray(array)
    if axes is None:
        return array, guess_axes(array.shape)
    axes = axes.strip().upper()
    if len(axes) != array.ndim:
        raise ImageError(
            f"axes {axes!r} name {len(axes)} axes but the image has {array.ndim} {array.shape}"
        )
    if "Y" not in axes or "X" not in axes or len(set(axes)) != len(axes):
        raise ImageError(f"axes {axes!r} must name Y and X once each, with no letter repeated")
    # drop length-1 axes that are neither Y nor X
    keep = [i for i, (a, n) in enumerate(zip(axes, array.shape, strict=True)) if n > 1 or a in "YX"]
    if len(keep) < len(axes):
        array = np.asarray(array).reshape([array.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    channel_axes = [i for i, a in enumerate(axes) if a in _CHANNEL_LETTERS]
    stack_axes = [i for i, a in enumerate(axes) if a not in "YX" + _CHANNEL_LETTERS]
    if len(channel_axes) > 1:
        raise ImageError(f"axes {axes!r} have two channel axes; pass one")
    if len(stack_axes) > 1:
        raise ImageError(
            f"image with axes {axes!r} {array.shape} has {len(stack_axes)} stack axes; "
            "samscope handles one (Z, T or another series): split the others first"
        )
    order = [*stack_axes, axes.index("Y"), axes.index("X"), *channel_axes]
    if order != sorted(order):  # lazy (dask/zarr) data stays lazy when already canonical
        array = np.transpose(np.asarray(array) if not hasattr(array, "transpose") else array, order)
    name = ("Z" if stack_axes else "") + "YX" + ("C" if channel_axes else "")
    return array, name


def trusted_file_axes(axes: str | None) -> str | None:
    """Axes from a file's metadata, or None when the reader only guessed them.

    tifffile names unknown axes "Q" (and "I" for a plain series of pages) and then guesses the
    last two are Y and X even for (H, W, C) data, so such axes are not used."""
    if not axes:
        return None
    axes = axes.upper()
    if "Q" in axes or "I" in axes:
        return None
    return axes
