"""``samscope segment`` and ``samscope embed``: automatic masks and embedding caches in batch.

    samscope segment images/ stack.tif --out masks --points-per-side 16 --format tif
    samscope segment images/ --out masks --workers 4              # Dask LocalCluster
    samscope segment images/ --out masks --scheduler tcp://head:8786
    samscope embed images/ stack.tif --cache embeddings           # zarr stores, resumable

The per-image work lives in `sam_core.batch` (and `sam_core.distributed` for Dask); this module
only turns options into settings and reports. Files that fail are listed at the end and the
exit code is 1; the others are written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import SamscopeError

# `sam_core.cli` imports this module for its COMMANDS, so cli helpers are imported inside the
# functions.

# option name → (AutomaticMaskGenerator argument, type, default, help)
AMG_OPTIONS = {
    "--points-per-side": ("points_per_side", int, 32, "grid of N x N point prompts (default 32)"),
    "--points-per-batch": ("points_per_batch", int, 64, "prompts per decoder pass (default 64)"),
    "--pred-iou-thresh": (
        "pred_iou_thresh",
        float,
        None,
        "predicted-IoU filter (0.88, or the fine-tuned model's from its model.json)",
    ),
    "--stability-score-thresh": (
        "stability_score_thresh",
        float,
        None,
        "stability filter (0.95, or the fine-tuned model's from its model.json)",
    ),
    "--stability-score-offset": ("stability_score_offset", float, 1.0, "logit offset (1.0)"),
    "--box-nms-thresh": ("box_nms_thresh", float, 0.7, "NMS IoU within a crop (0.7)"),
    "--crop-n-layers": ("crop_n_layers", int, 0, "layers of zoomed crops (0)"),
    "--crop-nms-thresh": ("crop_nms_thresh", float, 0.7, "NMS IoU across crops (0.7)"),
    "--crop-overlap-ratio": ("crop_overlap_ratio", float, 512 / 1500, "crop overlap (0.34)"),
    "--crop-n-points-downscale-factor": (
        "crop_n_points_downscale_factor",
        int,
        1,
        "grid shrink per crop layer (1)",
    ),
    "--min-mask-region-area": (
        "min_mask_region_area",
        int,
        0,
        "fill holes / drop islands below this many pixels (0 = off)",
    ),
}
_FRACTIONS = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh")
OFFICIAL_THRESHOLDS = ("pred_iou_thresh", "stability_score_thresh")


class BatchUsageError(SamscopeError):
    """A bad combination of `samscope segment` / `embed` options."""


def _image_options(parser: argparse.ArgumentParser) -> None:
    from .cli import _channels, add_axes_option

    group = parser.add_argument_group("image")
    group.add_argument(
        "--channel",
        type=_channels,
        metavar="C[,C,C]",
        help="channel(s) of multi-channel images: one (gray) or three (RGB)",
    )
    group.add_argument(
        "--normalization",
        default="auto",
        choices=("auto", "percentile", "minmax", "none"),
        help="for non-uint8 images (default: 1st-99.8th percentile)",
    )
    add_axes_option(group)


# -------------------------------------------------------------------------------- segment
def add_segment_command(subparsers) -> None:
    from .cli import _add_model_options

    parser = subparsers.add_parser(
        "segment",
        help="automatic masks for image files, folders and TIFF stacks (resumable, Dask)",
        description="Segment everything in each image with the automatic mask generator and "
        "write one label file per image into --out, atomically: a rerun skips images that "
        "are done. TIFF stacks give one label stack, each slice segmented on its own.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (made if needed)")
    parser.add_argument(
        "--format",
        choices=("tif", "png", "coco"),
        default="tif",
        help="tif: uint32 label TIFF (default); png: 16-bit label PNG; coco: JSON with RLE masks",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also write <stem>_overlay.png, the masks over the image (a stack: its middle slice)",
    )
    parser.add_argument(
        "--cache", type=Path, metavar="DIR", help="zarr embedding caches to reuse (samscope embed)"
    )
    amg = parser.add_argument_group("automatic mask generator (official names and defaults)")
    for flag, (dest, kind, default, text) in AMG_OPTIONS.items():
        metavar = "N" if kind is int else "X"
        amg.add_argument(flag, dest=dest, type=kind, default=default, metavar=metavar, help=text)
    _image_options(parser)
    from .cli_instance import add_instance_segment_options

    add_instance_segment_options(parser)  # --mode grid|decoder|decoder+prompts (issue 15)
    scale = parser.add_argument_group("parallel (Dask distributed)").add_mutually_exclusive_group()
    scale.add_argument(
        "--workers", type=int, help="run on a local Dask cluster of N worker processes"
    )
    scale.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster at ADDRESS")
    _add_model_options(parser)
    parser.set_defaults(run=run_segment)


def _fill_thresholds(amg: dict, model: str) -> None:
    """Settings left unset: the fine-tuned model's thresholds (its model.json), else the
    official values (`sam_core.session.automatic_settings`, the rule every front end uses)."""
    from .cli import _say
    from .session import automatic_settings

    unset = [name for name, value in amg.items() if value is None]
    resolved = automatic_settings(amg, model)
    for name in unset:
        if name in resolved:
            amg[name] = resolved[name]
    tuned = [name for name in unset if name in OFFICIAL_THRESHOLDS]
    if tuned and resolved["thresholds_from"] == "model.json":
        _say(
            "thresholds from the fine-tuned model's model.json: "
            + ", ".join(f"{name} {amg[name]}" for name in tuned)
        )


def _settings(args: argparse.Namespace):
    from .batch import SegmentSettings
    from .cli_instance import instance_settings

    amg = {dest: getattr(args, dest) for dest, *_ in AMG_OPTIONS.values()}
    _fill_thresholds(amg, args.model)
    if amg["points_per_side"] < 1 or amg["points_per_batch"] < 1:
        raise BatchUsageError("--points-per-side and --points-per-batch must be at least 1")
    for name in _FRACTIONS:
        if not 0.0 <= amg[name] <= 1.0:
            flag = "--" + name.replace("_", "-")
            raise BatchUsageError(f"{flag} must be between 0 and 1, got {amg[name]}")
    if amg["crop_n_layers"] < 0 or amg["min_mask_region_area"] < 0:
        raise BatchUsageError("--crop-n-layers and --min-mask-region-area can't be negative")
    model = args.model
    if Path(model).expanduser().is_file():
        model = str(Path(model).expanduser().resolve())  # workers may run elsewhere
    channels = tuple(args.channel) if isinstance(args.channel, list) else args.channel
    return SegmentSettings(
        model=model,
        device=args.device,
        precision=args.precision,
        format=args.format,
        channels=channels,
        normalization=args.normalization,
        axes=args.axes,
        amg=amg,
        cache_dir=None if args.cache is None else str(args.cache.expanduser().resolve()),
        overwrite=args.overwrite,
        overlay=args.overlay,
        **instance_settings(args),
    )


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .batch import is_done, list_inputs, plan_jobs, run_job
    from .cli import _load_predictor, _say

    settings = _settings(args)
    if args.workers is not None and args.workers < 1:
        raise BatchUsageError(f"--workers must be at least 1, got {args.workers}")
    jobs = plan_jobs(list_inputs(args.inputs), args.out, settings.format)
    pending = [job for job in jobs if settings.overwrite or not is_done(job)]
    skipped = len(jobs) - len(pending)
    _say(
        f"segment  {len(jobs)} input(s) -> {args.out}/ ({settings.format}); "
        f"{skipped} already done, {len(pending)} to do"
    )
    results = []
    if pending:
        bar = tqdm(total=len(pending), unit="image", file=sys.stderr, disable=args.quiet)
        try:
            if args.workers is not None or args.scheduler is not None:
                results = _run_distributed(args, pending, settings, bar)
            else:
                predictor, _ = _load_predictor(args)
                for job in pending:
                    bar.set_postfix_str(job.input.name)
                    results.append(run_job(job, settings, predictor))
                    _report(results[-1], bar)
                    bar.update()
        finally:
            bar.close()
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        _say(f"failed   {result.input}: {result.message}")
    written = sum(r.status == "done" for r in results)
    objects = sum(r.n_objects for r in results)
    _say(
        f"done     {written} written ({objects} objects), {skipped} skipped (already done), "
        f"{len(failed)} failed"
    )
    return 1 if failed else 0


def _report(result, bar) -> None:
    """One line per image on stdout (above the progress bar): objects found and time."""
    if result.status == "done":
        line = f"image    {result.input}: {result.n_objects} objects in {result.seconds:.1f} s"
    else:
        line = f"image    {result.input}: {result.status} after {result.seconds:.1f} s"
    bar.write(line, file=sys.stdout)


def _run_distributed(args, pending, settings, bar):
    from .checkpoints import fetch_checkpoint
    from .distributed import run_jobs
    from .registry import get_spec

    if args.workers is not None and not Path(settings.model).is_file():
        fetch_checkpoint(get_spec(settings.model).name, progress=not args.quiet)  # once, here

    def advance(result) -> None:
        bar.set_postfix_str(Path(result.input).name)
        _report(result, bar)
        bar.update()

    return run_jobs(pending, settings, args.workers, args.scheduler, progress=advance)


# ---------------------------------------------------------------------------------- embed
def add_embed_command(subparsers) -> None:
    from .cli import _add_model_options

    parser = subparsers.add_parser(
        "embed",
        help="precompute zarr embedding caches for images and stacks (resumable)",
        description="Compute image embeddings into the zarr cache folder that `segment "
        "--cache`, napari and FiftyOne share: one store per image plane, named by a digest of "
        "its pixels and settings (never by the file name). Stacks get one store per slice, "
        "written as computed, so an interrupted run resumes. Images larger than --max-side "
        "pixels are tiled.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--cache", type=Path, required=True, help="folder of the zarr stores")
    parser.add_argument(
        "--tile", metavar="H,W", help="always tile, with inner tiles of H x W pixels"
    )
    parser.add_argument("--halo", metavar="H,W", default="256,256", help="halo (256,256)")
    parser.add_argument(
        "--max-side", type=int, default=2048, help="tile images larger than this (2048)"
    )
    _image_options(parser)
    _add_model_options(parser)
    parser.set_defaults(run=run_embed)


def _pair(text: str | None, flag: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 0:
        raise BatchUsageError(f"{flag} takes H,W (two non-negative integers), got {text!r}")
    return values


def run_embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .batch import check_output_dir, list_inputs
    from .cli import _load_session, _say

    tile, halo = _pair(args.tile, "--tile"), _pair(args.halo, "--halo")
    inputs = list_inputs(args.inputs)
    check_output_dir(args.cache)
    tiling = {"max_side": args.max_side, "halo": halo}
    if tile is not None:  # always tile: every side is "above" 0
        tiling.update(max_side=0, tile_shape=tile)
    session, _ = _load_session(args, cache_dir=args.cache, **tiling)
    failed = []
    for path in inputs:
        bar = tqdm(desc=path.name, unit="tile", file=sys.stderr, disable=args.quiet, leave=False)

        def progress(done: int, total: int, bar=bar) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            image = session.load(path, args.channel, args.normalization, args.axes)
            slices = range(image.n_slices) if image.is_stack else [None]
            computed = 0
            for z in slices:
                key = session.embedding_key(image, z)  # hashes the plane's pixels once
                computed += not (args.cache / f"{key}.zarr").is_dir()
                session.embed(image, z, progress, key=key)
            what = f"stack of {image.n_slices}" if image.is_stack else "image"
            _say(
                f"cached   {path} ({what}, axes {image.axes}): {computed} plane(s) computed, "
                f"{len(slices) - computed} already in {args.cache}/"
            )
        except (SamscopeError, OSError, ValueError) as exc:
            failed.append(path)
            _say(f"failed   {path}: {type(exc).__name__}: {exc}")
        finally:
            bar.close()
    _say(f"done     {len(inputs) - len(failed)} cached, {len(failed)} failed")
    return 1 if failed else 0
