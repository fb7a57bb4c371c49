"""Sidecar files (``<output>.provenance.json``): write, read and validate lists of records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ProvenanceError
from .record import SCHEMA, SCHEMA_VERSION, SIDECAR_SUFFIX, MaskProvenance, _check_header, _plain


def sidecar_path(output: str | Path) -> Path:
    """The sidecar of an output file: ``mask.png`` → ``mask.provenance.json``."""
    output = Path(output)
    name = output.name
    for suffix in (".ome.tiff", ".ome.tif", *output.suffixes[-1:]):
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + SIDECAR_SUFFIX)


def write_sidecar(
    path: str | Path, records: Sequence[MaskProvenance], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write `records` (mask i of the output is record i) as one JSON file, atomically.

    extra: top-level keys describing the output (e.g. {"output": "mask.png", "labels": ...});
    they may not shadow ``schema``, ``schema_version`` or ``masks``."""
    from .. import __version__
    from ..image_io import write_bytes

    extra = _plain(dict(extra or {}))
    clash = {"schema", "schema_version", "masks"} & set(extra)
    if clash:
        raise ProvenanceError(f"sidecar extra keys {sorted(clash)} are reserved")
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "samscope_version": __version__,
        **extra,
        "masks": [r.to_dict() for r in records],
    }
    return write_bytes(Path(path), (json.dumps(document, indent=1) + "\n").encode())


def read_sidecar(path: str | Path) -> list[MaskProvenance]:
    """The records of a sidecar written by `write_sidecar`.

    Raises:
        ProvenanceError: unreadable or not JSON, another schema, a newer version, bad records.
    """
    return records_from_json(read_json(path), str(path))[0]


def read_json(path: str | Path) -> Any:
    """The JSON document of a file; ProvenanceError when missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"no provenance file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvenanceError(f"{path} is not a readable JSON file: {exc}") from None


def records_from_json(document: Any, where: str = "the file") -> tuple[list[MaskProvenance], dict]:
    """(records, extra top-level keys) of a sidecar document (see `write_sidecar`).

    Raises ProvenanceError naming `where` and, for a bad record, its index."""
    if not isinstance(document, Mapping) or "masks" not in document:
        raise ProvenanceError(f"{where} is not a samscope provenance sidecar (no 'masks' list)")
    try:
        _check_header(document.get("schema"), document.get("schema_version"))
    except ProvenanceError as exc:
        raise ProvenanceError(f"{where}: {exc}") from None
    records = []
    for i, item in enumerate(document["masks"]):
        try:
            records.append(MaskProvenance.from_dict(item))
        except ProvenanceError as exc:
            raise ProvenanceError(f"{where}, mask {i}: {exc}") from None
    extra = {k: v for k, v in document.items() if k not in ("schema", "schema_version", "masks")}
    return records, extra
