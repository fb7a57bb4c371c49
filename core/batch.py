"""Batch automatic segmentation of image files: one job per file, resumable, atomic outputs.

Shared by ``samscope segment`` (serial) and its Dask mode (`sam_core.distributed`):

    jobs = plan_jobs(list_inputs(["images/"]), Path("out"), "tif")
    for job in jobs:
        result = run_job(job, SegmentSettings(amg={"points_per_side": 16}))

Each input gives exactly one output file, written atomically (a temporary file in the output
folder, then ``os.replace``). So an output that exists is complete, a rerun skips it, and an
interrupted run loses nothing but the image it was working on.

Outputs (names: ``<input stem>`` + suffix):

* ``tif``: ``*_labels.tif``, uint32 instance labels (0 = background, 1..N objects), zlib
  compressed; a TIFF stack (Z, H, W[, C]) gives a (Z, H, W) label stack, each slice segmented
  on its own (ids restart at 1 in every slice).
* ``png``: ``*_labels.png``, 16-bit instance labels (at most 65535 objects; 2-D images only).
* ``coco``: ``*_masks.json``, the generator's records with COCO RLE segmentations (2-D only).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, OutputError, SamscopeError
from .image_io import IMAGE_SUFFIXES, write_bytes

FORMATS = {"tif": "_labels.tif", "png": "_labels.png", "coco": "_masks.json"}


@dataclass(frozen=True)
class SegmentSettings:
    """What every job needs besides its file names (plain values: picklable for Dask).

    amg: keyword arguments of `AutomaticMaskGenerator` (points_per_side, pred_iou_thresh, ...).
    cache_dir: the session's folder of zarr embedding stores (keyed on pixels, see
        `sam_core.session`), used unless the generator embeds zoomed crops (crop layers);
        None computes embeddings afresh.
    overlay: also write ``<stem>_overlay.png`` (the masks over the image, `sam_core.overlay`)
        beside each output; for a stack, its middle slice as ``<stem>_overlay_z<Z>.png``.
    """

    model: str = "vit_t"
    device: str = "cpu"
    precision: str = "fp32"
    format: str = "tif"
    channels: int | tuple[int, ...] | None = None
    normalization: str = "auto"
    axes: str | None = None
    amg: dict = field(default_factory=dict)
    cache_dir: str | None = None
    overwrite: bool = False
    overlay: bool = False
    mode: str = "grid"  # or "decoder" / "decoder+prompts" (`sam_core.instance`)
    instance: dict = field(default_factory=dict)  # see `cli_instance.instance_settings`


@dataclass(frozen=True)
class Job:
    """One input file and the output file it gives."""

    input: Path
    output: Path


@dataclass(frozen=True)
class JobResult:
    """status: "done" (written now), "skipped" (output existed) or "failed" (message says why)."""

    input: str
    output: str
    status: str
    message: str = ""
    n_objects: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------------------- planning
def list_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by `paths`: files as given, folders' image files (sorted, not
    recursive, hidden files skipped). Duplicates are dropped; order is kept."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not files:
                raise ImageError(
                    f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            found.extend(files)
        elif path.exists():
            found.append(path)
        else:
            raise ImageError(f"input not found: {path}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_path(input_path: Path, out_dir: Path, fmt: str) -> Path:
    """Where the result for `input_path` goes: out_dir / (stem + the format's suffix)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return Path(out_dir) / f"{Path(input_path).stem}{FORMATS[fmt]}"


def plan_jobs(inputs: Sequence[Path], out_dir: Path, fmt: str) -> list[Job]:
    """One job per input. Checks that the output folder is writable and that no two inputs
    share an output name; removes temporary files a killed run left behind."""
    out_dir = Path(out_dir).expanduser()
    check_output_dir(out_dir)
    jobs = [Job(Path(p), output_path(p, out_dir, fmt)) for p in inputs]
    by_output: dict[Path, Path] = {}
    for job in jobs:
        if job.output in by_output:
            raise OutputError(
                f"{by_output[job.output]} and {job.input} would both write {job.output}; "
                "segment them into different --out folders"
            )
        by_output[job.output] = job.input
    for job in jobs:
        for stale in out_dir.glob(f".{job.output.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    return jobs


def check_output_dir(out_dir: Path) -> None:
    """Make `out_dir` if needed and prove it is writable, or raise `OutputError`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".samscope-write-test."):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"output folder {out_dir} is not writable ({reason})") from None


def is_done(job: Job) -> bool:
    """Whether the job's output exists (outputs are only ever created complete)."""
    return job.output.is_file()


# ------------------------------------------------------------------------------- running
def session_for(settings: SegmentSettings):
    """The `Session` a job runs in: the settings' model, device, precision and cache folder."""
    from .session import Session

    return Session(
        settings.model, settings.device, settings.precision, cache_dir=settings.cache_dir
    )


def get_predictor(model: str, device: str = "cpu", precision: str = "fp32"):
    """The process's shared `Predictor` for `model` (Dask workers load it once)."""
    from .session import get_predictor as shared_predictor

    return shared_predictor(model, device, precision)


def run_job(
    job: Job,
    settings: SegmentSettings,
    predictor=None,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Segment one file and write its output; errors of this file become a "failed" result.

    predictor: the `Predictor` to use (default: the session's shared one for the settings).
    """
    from .session import Session

    start = time.perf_counter()
    if is_done(job) and not settings.overwrite:
        return JobResult(str(job.input), str(job.output), "skipped")
    try:
        session = session_for(settings)
        if predictor is not None:
            session = Session(
                settings.model,
                settings.device,
                settings.precision,
                cache_dir=settings.cache_dir,
                predictor=predictor,
            )
        image = session.load(job.input, settings.channels, settings.normalization, settings.axes)
        n_objects = _segment_file(job, image, settings, session, progress)
    except (SamscopeError, OSError, ValueError, MemoryError) as exc:
        return JobResult(
            str(job.input),
            str(job.output),
            "failed",
            f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - start,
        )
    return JobResult(
        str(job.input),
        str(job.output),
        "done",
        n_objects=n_objects,
        seconds=time.perf_counter() - start,
    )


def _segment_file(job, image, settings, session, progress) -> int:
    """image: the file as a `SessionImage` (a plane or a stack)."""
    if image.is_stack:
        if settings.format != "tif":
            raise ImageError(
                f"{job.input} is a stack of {image.n_slices} slices {image.data.shape}; "
                f"--format {settings.format} takes 2-D images only: use --format tif "
                "(one label TIFF stack) or pass 2-D images"
            )
        per_slice = [
            segment_image(image, settings, session, z, progress) for z in range(image.n_slices)
        ]
        labels = np.stack([_labels(records, image.image_hw) for records in per_slice])
        _write_provenance(job, image, per_slice, settings, session)
        _write_tiff(job.output, labels)
        if settings.overlay:
            z = image.n_slices // 2
            path = job.output.with_name(f"{job.input.stem}_overlay_z{z}.png")
            write_overlay(path, image.plane(z), labels[z], image.channels)
        return int(sum(len(np.unique(s)) - 1 for s in labels))
    records = segment_image(image, settings, session, None, progress)
    provenance = _write_provenance(job, image, [records], settings, session)
    if settings.format == "coco":
        _write_coco(job, image.image_hw, records, settings, provenance[0])
    else:
        labels = _labels(records, image.image_hw)
        if settings.format == "png":
            _write_png16(job.output, labels)
        else:
            _write_tiff(job.output, labels)
    if settings.overlay:
        path = job.output.with_name(f"{job.input.stem}_overlay.png")
        write_overlay(path, image.plane(), _labels(records, image.image_hw), image.channels)
    return len(records)


def segment_image(image, settings, session, z=None, progress=None) -> list[dict]:
    """Records of the automatic masks of one 2-D plane (slice `z` of a stack), see
    `AutomaticMaskGenerator`; embeddings come through the session (and its zarr cache)."""
    mode = "coco_rle" if settings.format == "coco" else "cropped_mask"
    if settings.mode != "grid":
        return _instance_records(image, settings, session, z, mode, progress)
    generator = session.automatic_generator(**settings.amg, output_mode=mode)
    return session.generate(image, z, generator=generator, progress=progress)


def _instance_records(image, settings, session, z, output_mode, progress) -> list[dict]:
    """The instance modes ("decoder", "decoder+prompts"; `sam_core.instance`) for one plane."""
    from .instance.postprocess import InstanceThresholds
    from .instance.prompting import PromptSettings

    options = settings.instance
    _, records = session.instance_segment(
        image,
        z,
        mode=settings.mode,
        decoder=options["decoder"],
        thresholds=InstanceThresholds(**options["thresholds"]),
        prompts=PromptSettings(**options["prompts"]),
        output_mode=output_mode,
        progress=progress,
    )
    return records


def _write_provenance(job, image, per_slice, settings, session) -> list:
    """Provenance of the job's masks (`sam_core.cli_engine`): a sidecar beside label images;
    for COCO, the records go into the annotations (returned, one list per slice)."""
    from .cli_engine import segment_provenance, segment_sidecar

    mode = getattr(settings, "mode", "grid")
    amg = settings.amg if mode == "grid" else getattr(settings, "instance", {})
    provenance = segment_provenance(session, image, per_slice, amg, job.input, mode)
    if settings.format != "coco":
        segment_sidecar(job.output, provenance)
    return provenance


def _labels(records: list[dict], image_hw: tuple[int, int]) -> np.ndarray:
    from .automatic import masks_to_label_image

    return masks_to_label_image(records, tuple(image_hw))


# -------------------------------------------------------------------------------- writing
def write_overlay(path: Path, plane: np.ndarray, labels: np.ndarray, channels=None) -> Path:
    """A PNG of the (H, W) instance `labels` drawn over `plane` ((H, W[, C]) as read) with
    `sam_core.overlay`, 64 objects at a time so memory stays small; written atomically."""
    from .image_io import write_png
    from .overlay import overlay

    ids = np.unique(labels)
    ids = ids[ids > 0]
    picture = overlay(plane, None, channels=channels)  # the image as the model sees it
    for start in range(0, len(ids), 64):
        picture = overlay(picture, labels[None] == ids[start : start + 64, None, None])
    return write_png(path, picture)


def _write_tiff(path: Path, labels: np.ndarray) -> None:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(np.uint32), compression="zlib", photometric="minisblack")
    write_bytes(path, buffer.getvalue())


def _write_png16(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise OutputError(
            f"{int(labels.max())} objects do not fit a 16-bit PNG ({path}); use --format tif"
        )
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(np.uint16)).save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())


def _write_coco(job: Job, image_hw, records: list[dict], settings, provenance=None) -> None:
    from . import __version__

    h, w = (int(v) for v in image_hw)
    annotations = []
    for i, record in enumerate(records):
        annotations.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": record["segmentation"],
                "area": int(record["area"]),
                "bbox": [float(v) for v in record["bbox"]],
                "predicted_iou": float(record["predicted_iou"]),
                "stability_score": float(record["stability_score"]),
                "point_coords": [[float(v) for v in p] for p in record["point_coords"]],
                "crop_box": [float(v) for v in record["crop_box"]],
            }
        )
        if provenance is not None:
            annotations[-1]["samscope_provenance"] = provenance[i].to_dict()
    document = {
        "images": [{"id": 1, "file_name": job.input.name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
        "info": {"samscope_version": __version__, "model": settings.model, "amg": settings.amg},
    }
    write_bytes(job.output, (json.dumps(document) + "\n").encode())
