"""Instance labels or a binary mask of many objects? One rule for every way labels come in.

Fine-tuning and evaluation read a label image as instances: each non-zero id is one object.
A binary label image (every object the same value: 1, 255 or True) that shows many separate
objects would be read as ONE object made of many pieces, and training on it silently fails
(the model learns to select everything at once). The rule that tells the two apart:

    A label image is "binary instead of instances" when it holds exactly one non-zero value
    (so also bool and 0/255 masks) and at least `MIN_OBJECTS` (3) of its connected regions
    (8-connected, i.e. pixels touching at a corner belong together) are objects: at least
    `MIN_REGION_PIXELS` (16) pixels AND at least `MIN_REGION_FRACTION` (5 %) of the largest
    region's area.

So one object labelled 1 is fine, also when occlusion cuts it into two pieces or it has a few
stray specks (single-object sets such as GrabCut and COCO-MVal: at most 2 such regions). Label
images with several ids are always instances. What the rule can't see: a binary image of
exactly two objects (read as one object of two pieces), and objects that touch (one region).

`check_instance_labels` applies the rule: it raises `BinaryLabelsError` or, when the caller
asks for it, splits the image into its connected regions (each one object, with a warning).
The CLI (``--split-binary-labels``), the API (``split_binary=True``) and the napari Fine-tune
widget (a checkbox) all call it; each front end words the fix its own way (`with_fix`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import ImageError

MIN_OBJECTS = 3  # separate regions that make a one-value label image "many objects"
MIN_REGION_PIXELS = 16  # smaller regions are specks, never objects
MIN_REGION_FRACTION = 0.05  # ... and so are regions below this fraction of the largest one
API_FIX = "pass split_binary=True to make each connected region one object"


class BinaryLabelsError(ImageError):
    """A binary label image that shows several separate objects (see the module docstring).

    problem: what is wrong, naming the label image; fix: how to go on (front-end specific).
    """

    def __init__(self, problem: str, fix: str = API_FIX) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Give each object its own id (0 = background), or {fix}")

    def with_fix(self, fix: str) -> BinaryLabelsError:
        """The same problem with the fix worded for another front end (e.g. a CLI flag)."""
        return BinaryLabelsError(self.problem, fix)


class SplitLabelsWarning(UserWarning):
    """A binary label image was split into its connected regions, one object each."""


@dataclass(frozen=True)
class BinaryRegions:
    """The connected regions of a label image with a single non-zero value.

    value: that value; regions: (H, W) int32 region ids 1..n_regions (0 = background);
    n_objects: regions that count as objects (`MIN_REGION_PIXELS`, `MIN_REGION_FRACTION`).
    """

    value: int
    regions: np.ndarray
    n_regions: int
    n_objects: int

    @property
    def many_objects(self) -> bool:
        """True when the image is "binary instead of instances" (the module's rule)."""
        return self.n_objects >= MIN_OBJECTS


def binary_regions(labels: np.ndarray) -> BinaryRegions | None:
    """The regions of an (H, W) label image whose non-zero pixels all hold one value (bool,
    0/1, 0/255, ...); None for an empty image or one with several ids (instances)."""
    from skimage.measure import label as connected_regions

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ImageError(f"a label image must be 2-D (H, W), got shape {labels.shape}")
    foreground = labels != 0
    values = labels[foreground]
    if values.size == 0 or np.any(values != values[0]):
        return None
    value = values[0]
    regions, count = connected_regions(foreground, connectivity=2, return_num=True)
    areas = np.bincount(regions.ravel())[1:]
    smallest = max(MIN_REGION_PIXELS, MIN_REGION_FRACTION * float(areas.max()))
    n_objects = int(np.count_nonzero(areas >= smallest))
    return BinaryRegions(int(value), regions.astype(np.int32), int(count), n_objects)


def check_instance_labels(
    labels: np.ndarray,
    name: str,
    split: bool = False,
    warn: Callable[[str], None] | None = None,
) -> np.ndarray:
    """`labels` as instance ids, after the "binary instead of instances" rule.

    labels: (H, W) integer or bool label image (0 = background); name: how messages name it
    (a file path, a layer). split: make every connected region of a one-value label image
    (two or more regions) its own object, returned as (H, W) int32 ids 1..n, and say so
    through `warn` (default: a `SplitLabelsWarning`). Without split, such an image that
    shows several separate objects raises `BinaryLabelsError` (an ImageError).
    Returns `labels` itself when there is nothing to split.
    """
    found = binary_regions(labels)
    if found is None or found.n_regions < 2 or (not split and not found.many_objects):
        return labels
    if not split:
        raise BinaryLabelsError(
            f"{name} is a binary label image: all objects have the value {found.value}, in "
            f"{found.n_regions} separate regions ({found.n_objects} of them object-sized), so "
            f"it would be read as one object in {found.n_regions} pieces instead of "
            f"{found.n_objects} objects"
        )
    specks = found.n_regions - found.n_objects
    note = f" ({specks} of them smaller than {MIN_REGION_PIXELS} px or 5 % of the largest)"
    message = (
        f"{name}: binary label image (all objects = {found.value}) split into "
        f"{found.n_regions} objects, one per connected region{note if specks else ''}; "
        "objects that touch stay merged"
    )
    if warn is None:
        warnings.warn(message, SplitLabelsWarning, stacklevel=2)
    else:
        warn(message)
    return found.regions
