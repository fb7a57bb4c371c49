"""Label bookkeeping without a viewer: next free id, commit without overwriting, undo.

Labels arrays are (H, W) or (Z, H, W) integer arrays (napari Labels data); an object is given
as {slice index: (H, W) bool mask}, with the slice index None for 2-D labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sam_core.errors import PromptError


def next_free_id(labels: np.ndarray) -> int:
    """The smallest id larger than every id in `labels` (1 for an empty labels array)."""
    return int(np.max(labels)) + 1 if labels.size else 1


@dataclass
class CommitRecord:
    """What one commit changed, enough to undo it.

    label_id: the id written. changes: {slice index or None: (flat pixel indices into that
    (H, W) plane, their previous values)}.
    """

    label_id: int
    changes: dict[int | None, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_pixels(self) -> int:
        return int(sum(len(idx) for idx, _ in self.changes.values()))


def _plane(labels: np.ndarray, index: int | None) -> np.ndarray:
    if labels.ndim == 2:
        if index is not None:
            raise PromptError(f"slice {index} given for 2-D labels of shape {labels.shape}")
        return labels
    if labels.ndim == 3:
        if index is None or not 0 <= index < labels.shape[0]:
            raise PromptError(f"slice {index} is outside labels of shape {labels.shape}")
        return labels[index]
    raise PromptError(f"labels must be 2-D or 3-D, got shape {labels.shape}")


def commit_object(
    labels: np.ndarray,
    masks: Mapping[int | None, np.ndarray],
    overwrite: bool = False,
    label_id: int | None = None,
) -> CommitRecord:
    """Write one object into `labels` (in place) as a new id; returns the undo record.

    masks: {slice index (None for 2-D labels): (H, W) bool}. Pixels that already belong to
    another object are kept unless `overwrite`. Raises PromptError (labels unchanged) for a
    mask of the wrong shape or an object with no pixel left to write.
    """
    label_id = next_free_id(labels) if label_id is None else int(label_id)
    if labels.dtype.kind in "iu" and label_id > np.iinfo(labels.dtype).max:
        raise PromptError(f"id {label_id} does not fit the labels dtype {labels.dtype}")
    targets: dict[int | None, np.ndarray] = {}
    for index, mask in masks.items():
        plane = _plane(labels, index)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != plane.shape:
            raise PromptError(
                f"mask of shape {mask.shape} does not fit labels planes of shape {plane.shape}"
            )
        write = mask if overwrite else mask & (plane == 0)
        flat = np.flatnonzero(write)
        if flat.size:
            targets[index] = flat
    if not targets:
        raise PromptError(
            "nothing to commit: the object is empty or lies entirely on existing objects "
            "(tick 'overwrite' to paint over them)"
        )
    record = CommitRecord(label_id)
    for index, flat in targets.items():
        plane = _plane(labels, index)
        view = plane.reshape(-1)
        if not np.shares_memory(view, plane):  # non-contiguous plane: write through indices
            rows, cols = np.unravel_index(flat, plane.shape)
            record.changes[index] = (flat, plane[rows, cols].copy())
            plane[rows, cols] = label_id
        else:
            record.changes[index] = (flat, view[flat].copy())
            view[flat] = label_id
    return record


def undo_commit(labels: np.ndarray, record: CommitRecord) -> None:
    """Restore the pixels a `commit_object` call changed (in place)."""
    for index, (flat, previous) in record.changes.items():
        plane = _plane(labels, index)
        rows, cols = np.unravel_index(flat, plane.shape)
        plane[rows, cols] = previous


class UndoStack:
    """Last-in first-out undo items (e.g. (labels layer, CommitRecord)), at most `depth` kept."""

    def __init__(self, depth: int = 50) -> None:
        self.depth = depth
        self._records: list[object] = []

    def __len__(self) -> int:
        return len(self._records)

    def push(self, record: object) -> None:
        self._records.append(record)
        del self._records[: -self.depth]

    def pop(self) -> object | None:
        return self._records.pop() if self._records else None

    def clear(self) -> None:
        self._records.clear()
