"""The data engine's command line (paper §4): provenance of CLI outputs, replay, and the
hand-off folders between FiftyOne, napari and fine-tuning.

    samscope replay out/cells_mask.provenance.json --out replayed/
    samscope export-reviewed --dataset nuclei --field sam_auto --min-rating 7 --out engine/
    samscope import-labels engine/to_correct --dataset nuclei --field corrected

Folders (`samscope finetune` reads the first; napari's series annotator opens the second):

    <out>/images/<stem>.<ext>        <out>/labels/<stem>.tif (uint32 ids, 0 background)
                                      <out>/labels/<stem>.provenance.json (record i = label i+1)
    <out>/to_correct/images/...       <out>/to_correct/labels/... (what exists, if anything)

`export-reviewed` and `import-labels` read and write a FiftyOne dataset: sam_core never
imports FiftyOne, so they call the FiftyOne plugin's `samscope_fiftyone.engine` (installed
with ``samscope[fiftyone]``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ImageError, ProvenanceError, SamscopeError
from .image_io import IMAGE_SUFFIXES, write_bytes, write_mask_png
from .provenance import (
    MaskProvenance,
    automatic_provenance,
    generator_settings,
    prompted_provenance,
    records_from_json,
    sidecar_path,
    write_sidecar,
)

__all__ = [
    "IMAGES_DIR",
    "LABELS_DIR",
    "TO_CORRECT_DIR",
    "add_engine_commands",
    "label_records",
    "labelled_pairs",
    "predict_sidecar",
    "read_provenance_file",
    "segment_provenance",
    "segment_sidecar",
    "write_labelled_example",
]

IMAGES_DIR = "images"
LABELS_DIR = "labels"
TO_CORRECT_DIR = "to_correct"


# ------------------------------------------------------------------ outputs' provenance


def predict_sidecar(
    session,
    image,
    out: Path,
    *,
    z,
    points,
    labels,
    box,
    multimask: bool,
    mask_index: int,
    mask: np.ndarray,
    image_path=None,
) -> Path:
    """Write ``<out stem>.provenance.json`` for the mask `out` of `samscope predict`."""
    record = prompted_provenance(
        session,
        image,
        z=z,
        points_xy=points,
        point_labels=labels,
        box_xyxy=box,
        multimask_output=multimask,
        mask_index=mask_index,
        mask=mask,
        image_path=None if image_path is None else Path(image_path).resolve(),
    )
    return write_sidecar(sidecar_path(out), [record], {"output": Path(out).name})


def segment_provenance(
    session,
    image,
    per_slice_records: Sequence[list[dict]],
    amg: dict,
    input_path=None,
    mode: str = "grid",
) -> list[list[MaskProvenance]]:
    """The records of `samscope segment`'s automatic masks: one list per slice (one for a 2-D
    image), record i of a slice = label i + 1 of that slice. amg: the settings given (resolved
    like the run's generator, `Session.automatic_generator`); for another `mode` (the
    instance decoder's) its settings as given, kept as they are."""
    if mode == "grid":
        settings = generator_settings(session.automatic_generator(**amg))
    else:
        settings = {k: v for k, v in dict(amg).items() if isinstance(v, (int, float, str, bool))}
    path = None if input_path is None else Path(input_path).resolve()
    zs = [None] if not image.is_stack else list(range(image.n_slices))
    return [
        automatic_provenance(
            session, image, records, z=z, settings=settings, mode=mode, image_path=path
        )
        for z, records in zip(zs, per_slice_records, strict=True)
    ]


def segment_sidecar(output: Path, provenance: list[list[MaskProvenance]]) -> Path:
    """Write the sidecar of a `samscope segment` label image (all slices' records in order;
    ``mask_labels`` says which slice and label each belongs to)."""
    mask_labels = [
        {"z": r.preprocessing.get("z"), "label": i + 1}
        for slice_records in provenance
        for i, r in enumerate(slice_records)
    ]
    records = [r for slice_records in provenance for r in slice_records]
    return write_sidecar(
        sidecar_path(output), records, {"output": Path(output).name, "mask_labels": mask_labels}
    )


# -------------------------------------------------------------------- engine folders


def write_labelled_example(
    out_dir: Path,
    stem: str,
    image_path: Path,
    label_image: np.ndarray | None,
    records: Sequence[MaskProvenance] = (),
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write one example of an engine folder: the image copied to ``images/<stem><ext>``
    (bytes unchanged), the (H, W) instance labels to ``labels/<stem>.tif`` (uint32) with
    ``labels/<stem>.provenance.json`` (record i = label i + 1). label_image None writes the
    image only. Returns the paths written."""
    import tifffile

    image_path = Path(image_path)
    images = Path(out_dir) / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    target = images / f"{stem}{image_path.suffix.lower()}"
    if target.resolve() != image_path.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(image_path, tmp)
        tmp.replace(target)
    written = {"image": target}
    if label_image is not None:
        buffer = io.BytesIO()
        tifffile.imwrite(
            buffer, np.asarray(label_image, np.uint32), compression="zlib", photometric="minisblack"
        )
        label_path = write_bytes(Path(out_dir) / LABELS_DIR / f"{stem}.tif", buffer.getvalue())
        written["labels"] = label_path
        written["provenance"] = write_sidecar(
            sidecar_path(label_path),
            list(records),
            {
                "output": f"{LABELS_DIR}/{stem}.tif",
                "image": f"{IMAGES_DIR}/{target.name}",
                "mask_labels": [{"label": i + 1} for i in range(len(records))],
                **(extra or {}),
            },
        )
    return written


def labelled_pairs(folder: Path) -> list[tuple[Path, Path | None, Path | None]]:
    """(image, labels or None, provenance sidecar or None) of each image of an engine folder
    (``images/`` + ``labels/``), sorted by name.

    Raises ImageError when the folder has no ``images/``."""
    folder = Path(folder)
    images = folder / IMAGES_DIR
    if not images.is_dir():
        raise ImageError(f"{folder} has no {IMAGES_DIR}/ folder (expected images/ + labels/)")
    pairs = []
    for path in sorted(images.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = folder / LABELS_DIR / f"{path.stem}.tif"
        side = sidecar_path(label)
        pairs.append((path, label if label.is_file() else None, side if side.is_file() else None))
    return pairs


# ---------------------------------------------------------------------------- replay


def add_replay_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="regenerate masks from their provenance (a sidecar or a COCO file)",
        description="Regenerate every mask a provenance file describes (a *.provenance.json "
        "sidecar, or a COCO file whose annotations carry samscope_provenance) with the same "
        "model, prompts and settings, and say whether each is bit-identical to the original. "
        "A changed model, samscope version, image or setting is an error naming it, unless "
        "--allow-changes. See docs/provenance.md.",
    )
    parser.add_argument("provenance", type=Path, help="sidecar JSON or COCO JSON")
    parser.add_argument("--out", type=Path, help="write the masks here (mask_<i>.png)")
    parser.add_argument("--image", type=Path, help="the image (default: the recorded file)")
    parser.add_argument(
        "--allow-changes",
        action="store_true",
        help="replay with a changed model/version/setting, with a warning, instead of refusing",
    )
    parser.add_argument("--device", default=None, help="default: the recorded one if here")
    parser.set_defaults(run=run_replay)


def read_provenance_file(path: Path) -> list[MaskProvenance]:
    """The records of a sidecar or of a COCO file's annotations (``samscope_provenance``)."""
    from .provenance import read_json

    document = read_json(path)
    if isinstance(document, dict) and "annotations" in document and "masks" not in document:
        found = [a.get("samscope_provenance") for a in document["annotations"]]
        if any(f is None for f in found):
            raise ProvenanceError(
                f"{path}: {sum(f is None for f in found)} of {len(found)} COCO annotations "
                "carry no samscope_provenance"
            )
        out = []
        for i, item in enumerate(found):
            try:
                out.append(MaskProvenance.from_dict(item))
            except ProvenanceError as exc:
                raise ProvenanceError(f"{path}, annotation {i}: {exc}") from None
        return out
    return records_from_json(document, str(path))[0]


def _image_for(record: MaskProvenance, given: Path | None, provenance_file: Path):
    if given is not None:
        return given
    recorded = record.preprocessing.get("image")
    if recorded is None:
        raise ProvenanceError("the record names no image; give --image")
    recorded = Path(recorded)
    for candidate in (
        recorded,
        provenance_file.parent / recorded,
        provenance_file.parent.parent / recorded,
    ):
        if candidate.is_file():
            return candidate
    nearby = provenance_file.parent.parent / IMAGES_DIR
    for candidate in sorted(nearby.glob(f"{recorded.stem}.*")) if nearby.is_dir() else []:
        return candidate
    raise ProvenanceError(f"the image of this mask, {recorded}, is not there; give --image")


def run_replay(args: argparse.Namespace) -> int:
    import warnings

    from .cli import _say, _table
    from .replay import ReplayWarning, replay_detailed, session_for

    records = read_provenance_file(args.provenance)
    if not records:
        raise ProvenanceError(f"{args.provenance} holds no masks")
    sessions: dict[tuple, object] = {}
    rows, differing = [], 0
    for i, record in enumerate(records):
        key = (
            record.model.get("source"),
            record.parameters.get("precision"),
            repr(record.preprocessing.get("tiling")),
        )
        if key not in sessions:
            sessions[key] = session_for(record, device=args.device)
        image = _image_for(record, args.image, args.provenance)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ReplayWarning)
            result = replay_detailed(
                record,
                image,
                session=sessions[key],
                allow_changes=args.allow_changes,
            )
        for warning in caught:
            if issubclass(warning.category, ReplayWarning):
                print(f"samscope: warning: mask {i}: {warning.message}", flush=True)
        if result.identical is False:
            differing += 1
        same = {True: "yes", False: "NO", None: "-"}[result.identical]
        rows.append((i, record.kind, int(result.mask.sum()), same))
        if args.out is not None:
            write_mask_png(args.out / f"mask_{i:04d}.png", result.mask)
    _say(_table(("mask", "kind", "area px", "identical"), rows))
    checked = sum(1 for r in rows if r[3] != "-")
    _say(f"replayed {len(records)} mask(s); {checked - differing} of {checked} identical")
    return 1 if differing else 0


# --------------------------------------------------------------- FiftyOne hand-offs


def _fiftyone_engine():
    if importlib.util.find_spec("fiftyone") is None:
        raise SamscopeError(
            "this command reads a FiftyOne dataset: install FiftyOne with "
            "pip install 'samscope[fiftyone]'"
        )
    return importlib.import_module("samscope_fiftyone.engine")


def add_export_reviewed_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-reviewed",
        help="FiftyOne review ratings -> training folder + a folder of images to correct",
        description="Masks of a FiftyOne detections field rated >= --min-rating (1-10, the "
        "review operator's ratings; several ratings of one mask: their mean) become training "
        "data in --out (images/ + labels/ + provenance, what `samscope finetune` reads). "
        "Samples with a mask rated lower, or with unrated masks, or none, go to "
        "--out/to_correct (images/ + the labels they have) for napari's series annotator.",
    )
    parser.add_argument("--dataset", required=True, help="FiftyOne dataset name")
    parser.add_argument("--field", required=True, help="detections field with the masks")
    parser.add_argument("--min-rating", type=float, default=7, help="accepted from (default 7)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--unrated",
        choices=("correct", "ignore"),
        default="correct",
        help="samples with unrated masks: to_correct (default) or left out",
    )
    parser.set_defaults(run=run_export_reviewed)


def run_export_reviewed(args: argparse.Namespace) -> int:
    from .cli import _say

    engine = _fiftyone_engine()
    summary = engine.export_reviewed_by_name(
        args.dataset, args.field, args.min_rating, args.out, unrated=args.unrated
    )
    _say(json.dumps(summary, indent=1))
    return 0


def add_import_labels_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-labels",
        help="a folder of labels + provenance (napari's annotator) -> FiftyOne detections",
        description="Load an engine folder (images/ + labels/<stem>.tif + provenance sidecars) "
        "into a FiftyOne dataset: each label becomes an fo.Detection with its mask and its "
        "provenance (class, flags, rating included) as attributes. Samples are matched by "
        "image file name; images not in the dataset are added.",
    )
    parser.add_argument("folder", type=Path, help="folder with images/ and labels/")
    parser.add_argument("--dataset", required=True, help="FiftyOne dataset (created if new)")
    parser.add_argument("--field", default="corrected", help="detections field (default corrected)")
    parser.set_defaults(run=run_import_labels)


def run_import_labels(args: argparse.Namespace) -> int:
    from .cli import _say

    engine = _fiftyone_engine()
    summary = engine.import_labels_by_name(args.folder, args.dataset, args.field)
    _say(json.dumps(summary, indent=1))
    return 0


def add_engine_commands(subparsers) -> None:
    """Register replay, export-reviewed and import-labels."""
    add_replay_command(subparsers)
    add_export_reviewed_command(subparsers)
    add_import_labels_command(subparsers)


def label_records(label_path: Path) -> dict[int, MaskProvenance]:
    """{label id: record} of the sidecar beside a label image ({} when there is none).

    Which id a record belongs to: the sidecar's ``mask_labels`` list (parallel to ``masks``,
    each {"label": id}), else a record's ``parameters.label``, else its position + 1.
    Raises ProvenanceError for a bad sidecar."""
    from .provenance import read_json

    side = sidecar_path(label_path)
    if not side.is_file():
        return {}
    records, extra = records_from_json(read_json(side), str(side))
    mask_labels = extra.get("mask_labels")
    if isinstance(mask_labels, list) and len(mask_labels) != len(records):
        raise ProvenanceError(f"{side}: {len(mask_labels)} mask_labels for {len(records)} masks")
    out = {}
    for i, record in enumerate(records):
        label = record.parameters.get("label", i + 1)
        if isinstance(mask_labels, list):
            label = mask_labels[i].get("label", label)
        out[int(label)] = record
    return out
