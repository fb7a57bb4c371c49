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

import functools
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
from .image_io import TIFF_SUFFIXES, read_image, write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *TIFF_SUFFIXES)
FORMATS = {"tif": "_labels.tif", "png": "_labels.png", "coco": "_masks.json"}


@dataclass(frozen=True)
class SegmentSettings:
    """What every job needs besides its file names (plain values: picklable for Dask).

    amg: keyword arguments of `AutomaticMaskGenerator` (points_per_side, pred_iou_thresh, ...).
    cache_dir: folder of zarr embedding caches (``<stem>.zarr``), used for images the generator
        embeds whole (no crop layers, not tiled); None computes embeddings afresh.
    """

    model: str = "vit_t"
    device: str = "cpu"
    precision: str = "fp32"
    format: str = "tif"
    channels: int | tuple[int, ...] | None = None
    normalization: str = "auto"
    amg: dict = field(default_factory=dict)
    cache_dir: str | None = None
    overwrite: bool = False


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
@functools.lru_cache(maxsize=2)
def get_predictor(model: str, device: str = "cpu", precision: str = "fp32"):
    """A `Predictor` for `model`, loaded once per process (Dask workers reuse it)."""
    from .loading import load_model
    from .predictor import Predictor

    return Predictor(load_model(model, device="cpu"), device=device, precision=precision)


def run_job(
    job: Job,
    settings: SegmentSettings,
    predictor=None,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Segment one file and write its output; errors of this file become a "failed" result.

    predictor: the `Predictor` to use (default: `get_predictor` for the settings' model).
    """
    start = time.perf_counter()
    if is_done(job) and not settings.overwrite:
        return JobResult(str(job.input), str(job.output), "skipped")
    try:
        image = read_image(job.input)
        if predictor is None:
            predictor = get_predictor(settings.model, settings.device, settings.precision)
        n_objects = _segment_file(job, image, settings, predictor, progress)
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


def is_stack(image: np.ndarray) -> bool:
    """(Z, H, W) or (Z, H, W, C) data, as a TIFF stack reads: 4-D, or 3-D with more than 4
    planes on the last axis (a colour image has 1, 3 or 4 there)."""
    return image.ndim == 4 or (image.ndim == 3 and image.shape[-1] > 4)


def _segment_file(job, image, settings, predictor, progress) -> int:
    if image.ndim > 4:
        raise ImageError(
            f"{job.input} holds {image.ndim}-D data {image.shape}; expected a 2-D image "
            "(H, W[, C]) or a stack (Z, H, W[, C])"
        )
    if is_stack(image):
        if settings.format != "tif":
            raise ImageError(
                f"{job.input} is a stack of {image.shape[0]} slices {image.shape}; "
                f"--format {settings.format} takes 2-D images only: use --format tif "
                "(one label TIFF stack) or pass 2-D images"
            )
        labels = np.stack(
            [
                _labels(
                    segment_image(image[z], settings, predictor, job, (image, z), progress),
                    image.shape[1:3],
                )
                for z in range(image.shape[0])
            ]
        )
        _write_tiff(job.output, labels)
        return int(sum(len(np.unique(s)) - 1 for s in labels))
    records = segment_image(image, settings, predictor, job, None, progress)
    if settings.format == "coco":
        _write_coco(job, image, records, settings)
    else:
        labels = _labels(records, image.shape[:2])
        if settings.format == "png":
            _write_png16(job.output, labels)
        else:
            _write_tiff(job.output, labels)
    return len(records)


def segment_image(image, settings, predictor, job=None, in_stack=None, progress=None) -> list[dict]:
    """Records of the automatic masks of one 2-D image (see `AutomaticMaskGenerator`).

    job / in_stack: the file's job and, for a slice, (volume, index): they name the cache entry.
    """
    from .automatic import AutomaticMaskGenerator

    mode = "coco_rle" if settings.format == "coco" else "cropped_mask"
    options = {**settings.amg, "output_mode": mode}
    amg = AutomaticMaskGenerator(predictor, **options)
    embedding = None
    if settings.cache_dir is not None and job is not None:
        embedding = _cached_embedding(amg, image, settings, predictor, job, in_stack)
    return amg.generate(
        image, embedding, settings.channels, settings.normalization, progress=progress
    )


def _cached_embedding(amg, image, settings, predictor, job, in_stack):
    """The embedding from the zarr cache: the whole image's, or its tiles' with the generator's
    own tile layout. None when the generator embeds zoomed crops (crop layers)."""
    from .embedding_cache import EmbeddingCache

    layout = amg.tile_layout(image.shape[:2])
    if layout is None and len(amg.regions_for(image.shape[:2])) != 1:
        return None
    tiling = {"max_side": 10**9} if layout is None else {"tile_shape": layout.tile_shape}
    cache = EmbeddingCache(
        Path(settings.cache_dir) / f"{job.input.stem}.zarr",
        predictor,
        halo=amg.halo,
        channels=settings.channels,
        normalization=settings.normalization,
        **tiling,
    )
    if in_stack is None:
        return cache.embedding(image)
    return cache.slice_embedding(*in_stack)


def _labels(records: list[dict], image_hw: tuple[int, int]) -> np.ndarray:
    from .automatic import masks_to_label_image

    return masks_to_label_image(records, tuple(image_hw))


# -------------------------------------------------------------------------------- writing
def _write_tiff(path: Path, labels: np.ndarray) -> None:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(np.uint32), compression="zlib")
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


def _write_coco(job: Job, image: np.ndarray, records: list[dict], settings) -> None:
    from . import __version__

    h, w = (int(v) for v in image.shape[:2])
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
    document = {
        "images": [{"id": 1, "file_name": job.input.name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
        "info": {"samscope_version": __version__, "model": settings.model, "amg": settings.amg},
    }
    write_bytes(job.output, (json.dumps(document) + "\n").encode())
