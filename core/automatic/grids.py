"""Where the automatic generator puts its point prompts (paper appendix B, "Cropping").

Layer 0 is the whole image with an n×n grid; layer i splits the image into 2^i × 2^i
overlapping crops, each with a grid of n / downscale^i points per side. Boxes are (x0, y0, x1,
y1) in original-image pixels, end-exclusive; grid points are (x, y) fractions of a crop's width
and height, at the centres of n equal cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tiling import TileLayout


@dataclass(frozen=True)
class CropRegion:
    """One region embedded on its own.

    box_xyxy: the region cut from the image and embedded, pixels, end-exclusive.
    points_box_xyxy: where this region's grid points go (the whole crop, or a tile's own part).
    layer: crop layer (0 = whole image or a tile of it); crops of deeper layers are more zoomed.
    points_per_side: grid size for this region.
    """

    box_xyxy: tuple[int, int, int, int]
    points_box_xyxy: tuple[int, int, int, int]
    layer: int
    points_per_side: int

    @property
    def hw(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box_xyxy
        return y1 - y0, x1 - x0

    def grid_points_xy(self) -> np.ndarray:
        """(n², 2) float64 grid points in original-image pixels (x, y)."""
        x0, y0, x1, y1 = self.points_box_xyxy
        unit = unit_grid(self.points_per_side)
        return unit * np.array([x1 - x0, y1 - y0], dtype=np.float64) + np.array([x0, y0])


def unit_grid(points_per_side: int) -> np.ndarray:
    """(n², 2) xy fractions in (0, 1): x varies fastest, cell centres 1/(2n) from the edges."""
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def crop_regions(
    image_hw: tuple[int, int],
    points_per_side: int,
    crop_n_layers: int = 0,
    crop_overlap_ratio: float = 512 / 1500,
    crop_n_points_downscale_factor: int = 1,
) -> list[CropRegion]:
    """The whole image plus, for each layer i = 1..crop_n_layers, 2^i × 2^i overlapping crops.

    The overlap between neighbouring crops of layer i is crop_overlap_ratio × the shorter
    image side × 2 / 2^i pixels (so deeper layers overlap less, in pixels).
    """
    h, w = image_hw
    regions = [CropRegion((0, 0, w, h), (0, 0, w, h), 0, points_per_side)]
    short = min(h, w)
    for layer in range(1, crop_n_layers + 1):
        per_side = 2**layer
        overlap = int(crop_overlap_ratio * short * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        n_points = max(1, int(points_per_side / crop_n_points_downscale_factor**layer))
        for row in range(per_side):
            for col in range(per_side):
                x0, y0 = (crop_w - overlap) * col, (crop_h - overlap) * row
                box = (x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h))
                regions.append(CropRegion(box, box, layer, n_points))
    return regions


def tile_regions(layout: TileLayout, points_per_side: int) -> list[CropRegion]:
    """One region per tile of a large image: the tile's outer box (inner box + halo) is
    embedded, its grid of points_per_side² points covers only the inner box, so every pixel's
    neighbourhood is prompted once and objects near a seam are seen whole."""
    regions = []
    for tile in layout.tiles:
        iy0, ix0, iy1, ix1 = tile.inner
        oy0, ox0, oy1, ox1 = tile.outer
        regions.append(CropRegion((ox0, oy0, ox1, oy1), (ix0, iy0, ix1, iy1), 0, points_per_side))
    return regions
