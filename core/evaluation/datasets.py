"""Reading evaluation sets: folders of images with instance ground truth.

A set is a folder laid out like those in ``shared/data``:

* ``images/<name>.<ext>``: the images (PNG, JPEG, TIFF; any dtype `read_image` reads);
* ``labels/<name>.tif``: (H, W) integer instance ids, 0 = background (uint8 ``1 = object`` for
  single-object sets such as GrabCut and COCO-MVal);
* optional ``instances/<name>.npz`` with ``masks`` (N, H, W) bool (may overlap), ``iscrowd``
  (N,) and ``category`` (N,): used instead of the label image when present (COCO);
* optional ``ignore/<name>.png``: nonzero pixels are left out of every IoU (GrabCut's band);
* optional ``edges/<name>.npz`` with ``boundaries`` (A, H, W) bool, one map per annotator
  (BSDS500); such sets' ``labels`` are (A, H, W) and are not read as instances;
* optional ``manifest.json`` with ``items`` (``name``, ``image``, ``label``, ``instances``,
  ``ignore``, ``edges`` paths relative to the set). Without a manifest, every image in
  ``images/`` is paired with ``labels/<stem>.tif``.

3-D volumes are skipped (recorded in `EvalSet.skipped`). Label images that don't match their
image's (H, W) raise `ImageError` naming both shapes. A binary label image of many separate
objects (all = 1, 255 or True) raises `BinaryLabelsError` naming the file, or is split into its
connected regions with ``split_binary=True`` (the rule: `sam_core.label_check`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import ImageError
from ..image_io import read_image
from ..label_check import check_instance_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Sample:
    """One image with its ground truth.

    image: (H, W) or (H, W, C) array as read from disk (any dtype).
    label_image: (H, W) int instance ids (0 = background), or None when `masks` is given.
    masks: (N, H, W) bool instance masks (may overlap), or None when `label_image` is given.
    iscrowd: (N,) bool, True for COCO crowd regions (left out of prompt protocols).
    ignore: (H, W) bool pixels excluded from IoU, or None.
    boundaries: (A, H, W) bool human boundary maps (edge sets only), or None.
    """

    name: str
    image: np.ndarray
    label_image: np.ndarray | None = None
    masks: np.ndarray | None = None
    iscrowd: np.ndarray | None = None
    ignore: np.ndarray | None = None
    boundaries: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])

    @property
    def n_instances(self) -> int:
        if self.masks is not None:
            return int(self.masks.shape[0])
        if self.label_image is None:
            return 0
        return len(_instance_ids(self.label_image))

    def instances(self, include_crowd: bool = False) -> Iterator[np.ndarray]:
        """Each instance as an (H, W) bool mask, in id order (crowd regions skipped)."""
        if self.masks is not None:
            crowd = self.iscrowd if self.iscrowd is not None else np.zeros(len(self.masks), bool)
            for mask, is_crowd in zip(self.masks, crowd, strict=True):
                if include_crowd or not is_crowd:
                    yield mask
            return
        if self.label_image is None:
            return
        slices = ndimage.find_objects(self.label_image)
        for index, region in enumerate(slices):
            if region is None:
                continue
            mask = np.zeros(self.shape, dtype=bool)
            mask[region] = self.label_image[region] == index + 1
            yield mask


@dataclass
class EvalSet:
    """The samples of one evaluation folder; `skipped` lists (name, reason) left out."""

    name: str
    root: Path
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        return sum(s.n_instances for s in self.samples)


def _instance_ids(label_image: np.ndarray) -> np.ndarray:
    ids = np.unique(label_image)
    return ids[ids != 0]


def check_label_image(label: np.ndarray, image_hw: tuple[int, int], name: str) -> np.ndarray:
    """Validate an instance label image against its image; returns it as an integer array.

    Raises ImageError when the label is not 2-D integers, its shape differs from the image's
    (H, W), or it holds negative ids.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ImageError(f"{name}: label image must be 2-D (H, W), got shape {label.shape}")
    if tuple(label.shape) != tuple(image_hw):
        raise ImageError(
            f"{name}: label image is {label.shape[0]}x{label.shape[1]} (HxW) but the image is "
            f"{image_hw[0]}x{image_hw[1]}; labels must match their image pixel for pixel"
        )
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.mod(label, 1) == 0):
            raise ImageError(f"{name}: label image holds non-integer values ({label.dtype})")
        label = label.astype(np.int64)
    if label.min() < 0:
        raise ImageError(f"{name}: label image holds negative ids")
    return label


def check_has_objects(label: np.ndarray, name: str) -> None:
    """Raise ImageError if a label image is empty or one object covers the whole image."""
    ids = _instance_ids(label)
    if ids.size == 0:
        raise ImageError(f"{name}: the label image is empty (all pixels 0): no object to use")
    if ids.size == 1 and np.all(label == ids[0]):
        raise ImageError(
            f"{name}: one object (id {int(ids[0])}) covers the whole image; background must be "
            "0. Is this a foreground mask with the wrong value, or an inverted label image?"
        )


def _read_label(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError(f"label image not found: {path}")
    return read_image(path)


def _read_ignore(path: Path, image_hw: tuple[int, int], name: str) -> np.ndarray:
    ignore = read_image(path)
    if ignore.ndim == 3:
        ignore = ignore.max(axis=-1)
    if ignore.shape != tuple(image_hw):
        raise ImageError(f"{name}: ignore mask {ignore.shape} does not match image {image_hw}")
    return ignore != 0


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read {path}: {exc}") from exc


def _entries(root: Path) -> list[dict[str, str]]:
    manifest = root / "manifest.json"
    if manifest.is_file():
        items = json.loads(manifest.read_text()).get("items")
        if not isinstance(items, list):
            raise ImageError(f"{manifest} has no 'items' list")
        return items
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise ImageError(f"{root} is not an evaluation set: it has no images/ folder")
    entries = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        entry = {"name": path.stem, "image": f"images/{path.name}"}
        for key, folder, suffix in (
            ("label", "labels", ".tif"),
            ("ignore", "ignore", ".png"),
            ("instances", "instances", ".npz"),
            ("edges", "edges", ".npz"),
        ):
            if (root / folder / f"{path.stem}{suffix}").is_file():
                entry[key] = f"{folder}/{path.stem}{suffix}"
        entries.append(entry)
    return entries


def load_sample(
    root: Path,
    entry: dict[str, str],
    split_binary: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Sample:
    """Read one manifest entry (paths relative to `root`) into a `Sample`.

    split_binary, warn: what to do with a binary label image of many objects (refuse, or
    split it into connected regions and say so), see `sam_core.label_check`.
    """
    name = str(entry.get("name") or Path(entry["image"]).stem)
    image = read_image(root / entry["image"])
    if image.ndim == 3 and image.shape[-1] > 4:
        raise ImageError(f"{name}: image of shape {image.shape} looks like a 3-D volume")
    hw = tuple(image.shape[:2])
    sample = Sample(name=name, image=image)
    if entry.get("edges"):
        boundaries = _read_npz(root / entry["edges"])["boundaries"].astype(bool)
        if boundaries.ndim != 3 or boundaries.shape[1:] != hw:
            raise ImageError(f"{name}: boundaries {boundaries.shape} don't match image {hw}")
        sample.boundaries = boundaries
    elif entry.get("instances"):
        data = _read_npz(root / entry["instances"])
        masks = np.asarray(data["masks"]).astype(bool)
        if masks.ndim != 3 or masks.shape[1:] != hw:
            raise ImageError(f"{name}: instance masks {masks.shape} don't match image {hw}")
        sample.masks = masks
        crowd = data.get("iscrowd")
        sample.iscrowd = np.zeros(len(masks), bool) if crowd is None else crowd.astype(bool)
    elif entry.get("label"):
        path = root / entry["label"]
        label = check_label_image(_read_label(path), hw, name)
        sample.label_image = check_instance_labels(label, str(path), split_binary, warn)
    else:
        raise ImageError(f"{name}: no ground truth (labels/{name}.tif) for image {entry['image']}")
    if entry.get("ignore"):
        sample.ignore = _read_ignore(root / entry["ignore"], hw, name)
    return sample


def load_eval_set(
    root: str | os.PathLike[str],
    names: list[str] | None = None,
    limit: int | None = None,
    split_binary: bool = False,
    warn: Callable[[str], None] | None = None,
) -> EvalSet:
    """Read an evaluation folder (see the module docstring).

    names: only these images (by name), in the given order; limit: at most this many images
    (after `names`), in manifest order. 3-D volumes are skipped and listed in `.skipped`.
    split_binary: split binary label images of many objects into their connected regions
    (one warning each through `warn`, default a `SplitLabelsWarning`) instead of raising
    `BinaryLabelsError` (an ImageError) naming the file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"evaluation set folder not found: {root}")
    entries = _entries(root)
    if names is not None:
        by_name = {str(e.get("name") or Path(e["image"]).stem): e for e in entries}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ImageError(f"{root}: no images named {missing[:5]}")
        entries = [by_name[n] for n in names]
    samples, skipped = [], []
    for entry in entries:
        if limit is not None and len(samples) >= limit:
            break
        shape = entry.get("shape")
        if isinstance(shape, list) and len(shape) == 3 and shape[-1] not in (1, 3, 4):
            skipped.append((str(entry.get("name")), f"3-D volume of shape {shape}"))
            continue
        samples.append(load_sample(root, entry, split_binary, warn))
    if not samples:
        raise ImageError(f"{root}: no 2-D images with ground truth found")
    return EvalSet(name=root.name, root=root, samples=samples, skipped=skipped)
