"""Per-pixel training targets of the instance decoder, from an instance label image.

For an (H, W) label image (0 = background, each id one object) the decoder learns three maps,
all float32 in 0..1 at the label image's resolution:

* ``foreground``: 1 inside any object.
* ``centre``: per object, 1 at its centre (the interior-most pixel, farthest from the
  object's boundary) falling linearly to 0 at the object pixel farthest from that centre:
  ``1 - d(p, centre) / max_q d(q, centre)``. Touching objects have separate peaks.
* ``boundary``: per object, the Euclidean distance of each pixel to the nearest pixel outside
  the object (image border counts as outside), divided by the object's maximum: 1 in the
  middle, near 0 at the edge, so it dips between touching objects.

Background is 0 in all three maps. The seeded watershed of `sam_core.instance.postprocess`
turns predicted maps back into objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

N_MAPS = 3  # foreground, centre, boundary
MAP_NAMES = ("foreground", "centre", "boundary")


def instance_targets(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer instance labels → (3, H, W) float32 foreground, centre, boundary maps."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    out = np.zeros((N_MAPS, *labels.shape), dtype=np.float32)
    out[0] = labels > 0
    for index, region in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False))):
        if region is None:
            continue
        # one pixel of margin so the edge of the box counts as outside the object
        padded = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in region)
        mask = labels[padded] == index + 1
        if not mask.any():
            continue
        inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        peak = inside.max()
        out[2][padded][mask] = (inside[mask] / peak).astype(np.float32)
        cy, cx = np.unravel_index(np.argmax(inside), mask.shape)
        rows, cols = np.nonzero(mask)
        to_centre = np.hypot(rows - cy, cols - cx)
        far = to_centre.max()
        centre = 1.0 - to_centre / far if far > 0 else np.ones_like(to_centre)
        out[1][padded][rows, cols] = centre.astype(np.float32)
    return out
