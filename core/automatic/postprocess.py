"""Removal of small islands and holes (paper appendix B, "Postprocessing")."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fill holes smaller than `min_area` pixels, then drop islands smaller than it.

    mask: (h, w) bool, all-False outside (e.g. cut to its bounding box). Components are
    8-connected. Returns (new mask, changed). If every island is small, the mask becomes empty
    (the paper removes such masks entirely).
    """
    if min_area <= 0 or not mask.any():
        return mask, False
    padded = np.pad(mask, 1)  # the outside background becomes one component, never a "hole"
    holes, n_holes = ndimage.label(~padded, structure=_EIGHT_CONNECTED)
    changed = False
    if n_holes > 1:
        sizes = np.bincount(holes.ravel())
        small = np.flatnonzero(sizes < min_area)
        small = small[small != 0]
        outside = holes[0, 0]
        small = small[small != outside]
        if small.size:
            padded = padded | np.isin(holes, small)
            changed = True
    islands, n_islands = ndimage.label(padded, structure=_EIGHT_CONNECTED)
    if n_islands:
        sizes = np.bincount(islands.ravel())
        sizes[0] = 0
        small = np.flatnonzero((sizes > 0) & (sizes < min_area))
        if small.size:
            padded = padded & ~np.isin(islands, small)
            changed = True
    return padded[1:-1, 1:-1], changed
