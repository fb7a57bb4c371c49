"""Annotating a folder of images one after another: the listing, the saved progress, what is next.

No GUI here: the napari series widget (`samscope_napari.series_widget`) and any script use the
same rules.

Input folder, either

* ``images/<name>.<ext>`` with optional ``labels/<name>.tif`` (instance ids, 0 = background) and
  ``labels/<name>.provenance.json`` next to them: the layout of an evaluation set, of a
  fine-tuning set and of the ``to_correct/`` folder that ``samscope export-reviewed`` writes;
  the labels are the starting point to correct; or
* image files directly in the folder (no labels).

Output folder (never the input folder; nothing in the input is ever written)::

    images/<name>.<ext>               copy of each image saved (so the folder is a training set)
    labels/<name>.tif                 (H, W) or (Z, H, W) instance ids, uint16 (uint32 if needed)
    labels/<name>.provenance.json     provenance sidecar (`write_labels`: record i belongs to
                                      the label id ``mask_labels[i]["label"]``)
    samscope-series.json              progress: which images are done, where you stopped

An image counts as done when the state file says so *and* its labels file exists, so deleting an
output label file makes that image "to do" again. Errors: `ImageError` for an input folder
without images or with two images of one name, `OutputError` for an unusable output folder or a
damaged / newer state file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError, OutputError
from .image_io import IMAGE_SUFFIXES, write_bytes
from .provenance import sidecar_path

__all__ = [
    "STATE_FILE",
    "STATE_SCHEMA",
    "STATE_VERSION",
    "Series",
    "SeriesItem",
    "list_series",
    "read_labels_provenance",
    "sidecar_path",
    "write_label_tiff",
    "write_labels",
]

STATE_FILE = "samscope-series.json"
STATE_SCHEMA = "samscope.series"
STATE_VERSION = 1


@dataclass(frozen=True)
class SeriesItem:
    """One image of a series. name: the file stem (unique in the series); image: its file;
    labels / sidecar: the input folder's label TIFF and provenance sidecar, if any."""

    name: str
    image: Path
    labels: Path | None = None
    sidecar: Path | None = None


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def list_series(folder: str | os.PathLike[str]) -> list[SeriesItem]:
    """The images of `folder` in name order, each paired with ``labels/<name>.tif`` (and its
    sidecar) when the folder has an ``images/`` sub-folder.

    Raises:
        ImageError: the folder is missing, holds no image, or two images share a name
            (``a.png`` and ``a.tif`` would write one ``labels/a.tif``).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImageError(f"image folder not found: {root}")
    image_dir = root / "images" if (root / "images").is_dir() else root
    files = _image_files(image_dir)
    if not files:
        where = f"{image_dir} (nor in {root})" if image_dir != root else str(root)
        raise ImageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {where}")
    seen: dict[str, Path] = {}
    items = []
    for path in files:
        if path.stem in seen:
            raise ImageError(
                f"two images named {path.stem!r} in {image_dir} ({seen[path.stem].name} and "
                f"{path.name}): their labels would overwrite each other; rename one"
            )
        seen[path.stem] = path
        labels = sidecar = None
        if image_dir != root:
            candidate = root / "labels" / f"{path.stem}.tif"
            labels = candidate if candidate.is_file() else None
            if labels is not None and sidecar_path(labels).is_file():
                sidecar = sidecar_path(labels)
        items.append(SeriesItem(path.stem, path, labels, sidecar))
    return items


def write_label_tiff(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write (H, W) or (Z, H, W) instance ids as a zlib TIFF, atomically (uint16 when every id
    fits, else uint32). Raises ImageError for another rank, negative or non-integer ids."""
    array = np.asarray(labels)
    if array.ndim not in (2, 3):
        raise ImageError(f"labels must be (H, W) or (Z, H, W), got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise ImageError(f"labels must hold integer ids, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ImageError("labels hold negative ids; ids are 0 (background) or positive")
    top = int(array.max()) if array.size else 0
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array.astype(dtype), compression="zlib", photometric="minisblack")
    return write_bytes(path, buffer.getvalue())


def write_labels(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    records: Mapping[int, Any],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write a label TIFF (`write_label_tiff`) and its provenance sidecar next to it
    (``<stem>.provenance.json``, `sam_core.provenance.write_sidecar`): record i of the sidecar
    belongs to the label id ``mask_labels[i]["label"]`` (a top-level list, the engine
    folders' rule). Records of ids that no longer appear in `labels` are left out. Returns
    (label file, sidecar)."""
    from .provenance import MaskProvenance, write_sidecar

    present = set(np.unique(np.asarray(labels)).tolist()) - {0}
    ids = sorted(int(i) for i in records if int(i) in present)
    chosen = []
    for i in ids:
        record = records[i]
        chosen.append(
            record if isinstance(record, MaskProvenance) else MaskProvenance.from_dict(record)
        )
    path = write_label_tiff(path, labels)
    mask_labels = [{"label": i} for i in ids]
    document = {"labels": path.name, "mask_labels": mask_labels, **dict(extra or {})}
    return path, write_sidecar(sidecar_path(path), chosen, document)


def read_labels_provenance(label_path: str | os.PathLike[str]) -> dict[int, Any]:
    """{label id: `MaskProvenance`} of the sidecar beside a label TIFF ({} when there is
    none), by the engine folders' rule (`sam_core.cli_engine.label_records`: the sidecar's
    ``mask_labels``, else a record's ``parameters.label``, else its position + 1).

    Raises ProvenanceError for an unreadable sidecar, another or newer schema, or
    ``mask_labels`` that don't match its records."""
    from .cli_engine import label_records

    return label_records(Path(label_path))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _State:
    input: str
    done: set[str] = field(default_factory=set)
    current: str | None = None

    def to_json(self, names: Sequence[str]) -> bytes:
        state = {
            "schema": STATE_SCHEMA,
            "schema_version": STATE_VERSION,
            "input": self.input,
            "images": list(names),
            "done": sorted(self.done),
            "current": self.current,
            "updated": _now(),
        }
        return (json.dumps(state, indent=1) + "\n").encode()


def _read_state(path: Path, input_folder: str) -> _State:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputError(
            f"the progress file {path} can't be read ({exc}); move it away to start the series "
            "afresh (the saved labels stay)"
        ) from exc
    if not isinstance(raw, dict) or raw.get("schema") != STATE_SCHEMA:
        raise OutputError(f"{path} is not a samscope series progress file")
    version = raw.get("schema_version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise OutputError(
            f"{path} was written by a newer samscope (progress version {version}, this one "
            f"reads {STATE_VERSION}); update samscope or choose another output folder"
        )
    done = raw.get("done", [])
    current = raw.get("current")
    if not isinstance(done, list) or not (current is None or isinstance(current, str)):
        raise OutputError(f"{path}: 'done' must be a list of names and 'current' a name")
    return _State(str(raw.get("input", input_folder)), {str(n) for n in done}, current)


class Series:
    """A folder of images annotated one after another into an output folder.

    Construct with the input and output folders: the images are listed (`list_series`) and the
    progress is read from ``<output>/samscope-series.json`` when it exists (resume), else
    started. Indices are positions in `items` (name order).

    Raises:
        ImageError: see `list_series`.
        OutputError: the output folder is the input folder (or inside its images/), can't be
            made, or holds a damaged or newer progress file.
    """

    def __init__(self, input_folder: str | os.PathLike[str], output_folder: str | os.PathLike[str]):
        self.input = Path(input_folder).expanduser().resolve()
        self.output = Path(output_folder).expanduser().resolve()
        self.items = list_series(self.input)
        if self.output == self.input or self.output.is_relative_to(self.input / "images"):
            raise OutputError(
                f"the output folder {self.output} must not be the input folder (nothing in the "
                "input is ever overwritten); choose another folder"
            )
        if self.output.exists() and not self.output.is_dir():
            raise OutputError(f"the output {self.output} is a file, not a folder")
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"can't make the output folder {self.output}: {exc}") from exc
        self._index = {item.name: i for i, item in enumerate(self.items)}
        state_path = self.output / STATE_FILE
        if state_path.is_file():
            self._state = _read_state(state_path, str(self.input))
        else:
            self._state = _State(str(self.input))

    # ------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.items)

    @property
    def state_path(self) -> Path:
        return self.output / STATE_FILE

    def output_labels(self, index: int) -> Path:
        """``<output>/labels/<name>.tif`` of item `index`."""
        return self.output / "labels" / f"{self.items[index].name}.tif"

    def output_sidecar(self, index: int) -> Path:
        return sidecar_path(self.output_labels(index))

    def is_done(self, index: int) -> bool:
        """Saved (state says done) and its labels file still exists."""
        name = self.items[index].name
        return name in self._state.done and self.output_labels(index).is_file()

    @property
    def n_done(self) -> int:
        return sum(self.is_done(i) for i in range(len(self)))

    def index_of(self, name: str) -> int:
        """Position of the image called `name` (its file stem); ImageError when unknown."""
        if name not in self._index:
            raise ImageError(f"no image named {name!r} in {self.input}")
        return self._index[name]

    def next_to_do(self, after: int | None = None) -> int | None:
        """The first image not done after position `after` (from the start when None),
        wrapping around; None when every image is done."""
        n = len(self)
        start = 0 if after is None else (after + 1) % n
        for step in range(n):
            i = (start + step) % n
            if not self.is_done(i):
                return i
        return None

    def resume_index(self) -> int:
        """Where to start: the image you were on when you stopped, else the first not done,
        else the first."""
        current = self._state.current
        if current in self._index:
            return self._index[current]
        todo = self.next_to_do()
        return 0 if todo is None else todo

    def labels_to_open(self, index: int) -> tuple[Path | None, Path | None]:
        """(label TIFF, sidecar) to show for item `index`: the output's saved ones when they
        exist (resume), else the input's labels to correct, else (None, None)."""
        saved = self.output_labels(index)
        if saved.is_file():
            sidecar = sidecar_path(saved)
            return saved, sidecar if sidecar.is_file() else None
        item = self.items[index]
        return item.labels, item.sidecar

    def progress_text(self) -> str:
        return f"{self.n_done} of {len(self)} done"

    # ------------------------------------------------------------------------- updates
    def set_current(self, index: int) -> None:
        """Remember `index` as the image being annotated (written at once: resume point)."""
        self._state.current = self.items[index].name
        self._write_state()

    def save(
        self,
        index: int,
        labels: np.ndarray,
        records: Mapping[int, Any] | None = None,
        extra: dict | None = None,
    ) -> Path:
        """Write item `index`'s labels (``labels/<name>.tif``) with their provenance sidecar
        (`write_labels`; `records`: {label id: `MaskProvenance`}), a copy of the image
        (``images/``), and mark it done. Returns the label file. Raises ImageError /
        OutputError / ProvenanceError; on an error the progress file is left as it was."""
        item = self.items[index]
        out_labels = self.output_labels(index)
        sidecar_extra = {"image": f"images/{item.image.name}", "series_input": str(self.input)}
        try:
            write_labels(out_labels, labels, records or {}, {**sidecar_extra, **(extra or {})})
            image_copy = self.output / "images" / item.image.name
            if not image_copy.is_file() or image_copy.stat().st_size != item.image.stat().st_size:
                image_copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(item.image, image_copy)
        except OSError as exc:
            raise OutputError(f"can't save {item.name!r} into {self.output}: {exc}") from exc
        self._state.done.add(item.name)
        self._state.current = item.name
        self._write_state()
        return out_labels

    def _write_state(self) -> None:
        names = [item.name for item in self.items]
        try:
            write_bytes(self.state_path, self._state.to_json(names))
        except OSError as exc:
            raise OutputError(f"can't write the progress file {self.state_path}: {exc}") from exc
