"""Provenance of committed objects, kept in a Labels layer's metadata (no Qt needed).

``layer.metadata["samscope_provenance"]`` is {label id (int): record dict}: the
`sam_core.provenance.MaskProvenance.to_dict` of how each object was made (prompts, model,
preprocessing, parameters, review). Commits add a record, an overwrite that erases an object
drops its record, undo restores the previous records (`snapshot` / `restore`), and saving
through samscope writes them next to the label TIFF (`save_labels_layer`, the npe2 writer
`write_labels`). Records of ids no longer in the data are dropped by `prune`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sam_core.provenance import MaskProvenance
from sam_core.series import read_labels_provenance, write_labels

METADATA_KEY = "samscope_provenance"
IMAGE_PATH_KEY = "samscope_image_path"  # an image layer's file, when napari has no source


def records(layer: Any) -> dict[int, dict]:
    """The layer's {label id: record dict} (an empty dict if it has none; not a copy)."""
    metadata = layer.metadata
    held = metadata.get(METADATA_KEY)
    if not isinstance(held, dict):
        held = {}
        metadata[METADATA_KEY] = held
    return held


def record_of(layer: Any, label_id: int) -> MaskProvenance | None:
    """The `MaskProvenance` of object `label_id`, or None when it has none."""
    held = records(layer).get(int(label_id))
    return None if held is None else MaskProvenance.from_dict(held)


def set_record(layer: Any, label_id: int, record: MaskProvenance | Mapping) -> None:
    data = record.to_dict() if isinstance(record, MaskProvenance) else dict(record)
    records(layer)[int(label_id)] = data


def snapshot(layer: Any) -> dict[int, dict]:
    """A copy of the records to put back with `restore` (undo)."""
    return dict(records(layer))


def restore(layer: Any, saved: Mapping[int, dict]) -> None:
    held = records(layer)
    held.clear()
    held.update(saved)


def drop_missing(layer: Any, ids: Iterable[int]) -> list[int]:
    """Drop the records of those `ids` that no longer appear in the layer's data (e.g. painted
    over by an overwriting commit); returns the ids dropped."""
    held = records(layer)
    data = np.asarray(layer.data)
    gone = [int(i) for i in ids if int(i) in held and not np.any(data == int(i))]
    for i in gone:
        del held[i]
    return gone


def prune(layer: Any) -> list[int]:
    """Drop the records of every id no longer in the data (erased with napari's tools)."""
    held = records(layer)
    if not held:
        return []
    present = set(np.unique(np.asarray(layer.data)).tolist())
    gone = [i for i in held if i not in present]
    for i in gone:
        del held[i]
    return gone


def typed_records(layer: Any) -> dict[int, MaskProvenance]:
    """{label id: MaskProvenance} of the layer (ProvenanceError for a damaged record)."""
    return {i: MaskProvenance.from_dict(d) for i, d in records(layer).items()}


def save_labels_layer(
    path: str | Path, data: np.ndarray, metadata: Mapping, extra: Mapping | None = None
) -> tuple[Path, Path]:
    """Write a Labels layer's data as a label TIFF and its records as the sidecar next to it
    (`sam_core.series.write_labels`). Returns (label file, sidecar)."""
    held = metadata.get(METADATA_KEY) or {}
    return write_labels(path, np.asarray(data), {int(k): v for k, v in held.items()}, extra)


def load_records(label_path: str | Path) -> dict[int, dict]:
    """{label id: record dict} of the sidecar beside a label TIFF, for a layer's metadata."""
    return {i: r.to_dict() for i, r in read_labels_provenance(label_path).items()}


def write_labels_hook(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer → label TIFF + ``<stem>.provenance.json`` (File > Save
    Selected Layers… with "samscope" chosen)."""
    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_suffix(".tif")
    written = save_labels_layer(target, data, meta.get("metadata") or {})
    return [str(p) for p in written]
