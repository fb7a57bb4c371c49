"""Sample images that ship with scikit-image (no download), as napari layer data tuples."""

from __future__ import annotations

from skimage import data


def coins() -> list[tuple]:
    """Greek coins, (303, 384) uint8 gray: round objects on a textured background."""
    return [(data.coins(), {"name": "coins"}, "image")]


def cell() -> list[tuple]:
    """A cell in phase contrast, (660, 550) uint8 gray."""
    return [(data.cell(), {"name": "cell"}, "image")]


def immunohistochemistry() -> list[tuple]:
    """IHC-stained tissue, (512, 512, 3) uint8 RGB."""
    return [(data.immunohistochemistry(), {"name": "immunohistochemistry", "rgb": True}, "image")]
