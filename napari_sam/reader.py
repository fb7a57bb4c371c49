"""A napari reader for image files that reads them exactly as samscope's core does.

napari's built-in reader ignores a JPEG's EXIF orientation and TIFF axes metadata, so the
viewer would show (and samscope would segment) other pixels than the CLI and FiftyOne. This
reader goes through `sam_core.image_io.read_image_axes`: orientation applied, full bit depth,
axes from the file's metadata or core's one rule. Multi-channel data (other than RGB) opens as
one layer per channel ("<name> ch<c>"), which is what the annotator's channel choice means.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sam_core.image_io import IMAGE_SUFFIXES, read_image_axes

LayerData = tuple[object, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader hook: our reader for single image files samscope reads, else None."""
    if isinstance(path, list):
        if not path or not all(Path(p).suffix.lower() in IMAGE_SUFFIXES for p in path):
            return None
    elif Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layer data for each file: (data, {"name", "rgb" or "channel_axis"}, "image")."""
    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    for one in paths:
        data, axes = read_image_axes(one)
        name = Path(one).stem
        if not axes.endswith("C"):
            layers.append((data, {"name": name}, "image"))
            continue
        n = int(data.shape[-1])
        if n == 3 or (n == 4 and data.dtype == np.uint8):  # colour, as core reads it
            layers.append((data, {"name": name, "rgb": True}, "image"))
            continue
        names = [f"{name} ch{c}" for c in range(n)]
        layers.append((data, {"name": names, "channel_axis": data.ndim - 1}, "image"))
    return layers
