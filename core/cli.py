"""The ``samscope`` command line.

    samscope models                                   # known models, sizes, what is cached
    samscope predict cells.tif --point 120,80 --out mask.png
    samscope predict --sample coins                   # a bundled image, default prompt
    samscope demo --out demo_out                      # the quick-start job

Each subcommand is one ``add_<name>_command(subparsers)`` function that declares its options
and sets ``run=`` to the function doing the work; `COMMANDS` lists them. Errors the user can
cause (`SamscopeError`) end as one ``samscope: error: ...`` message with exit code 2, no
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoints import CACHE_ENV, OFFLINE_ENV, cache_dir, cached_path, fetch_checkpoint
from .cli_batch import add_embed_command, add_segment_command
from .cli_engine import add_engine_commands, predict_sidecar
from .cli_evaluate import add_evaluate_command
from .cli_finetune import add_finetune_command
from .cli_instance import add_train_instance_command
from .cli_onnx import add_export_onnx_command
from .cli_plugin_install import add_fiftyone_install_command
from .errors import SamscopeError, UnknownModelError
from .image_input import ImageGeometry, as_rgb_uint8_or_float
from .image_io import write_bytes, write_mask_png, write_png
from .mask_geometry import best_mask_index
from .prompts import build_prompts
from .registry import DEFAULT_MODEL, get_spec, list_models

PROG = "samscope"

# Sample images that ship inside the scikit-image wheel (no download), by skimage.data name.
SAMPLES = {
    "coins": "Greek coins, gray 303x384 (the demo's default)",
    "cell": "phase-contrast cell, gray 660x550",
    "immunohistochemistry": "IHC-stained tissue, RGB 512x512",
    "hubble_deep_field": "Hubble deep field galaxies, RGB 872x1000",
    "moon": "lunar surface, gray 512x512",
    "camera": "cameraman, gray 512x512",
    "astronaut": "astronaut Eileen Collins, RGB 512x512",
}
DEMO_SAMPLE = "coins"


class CliError(SamscopeError):
    """A bad combination of command-line options."""


# ------------------------------------------------------------------------------- helpers


def seed_points(image: np.ndarray, count: int = 1, channels=None) -> np.ndarray:
    """(K ≤ count, 2) xy prompts: the interior-most pixel of each of the largest objects.

    Objects are the connected components of an Otsu threshold (the minority phase, so dark
    objects on a bright background work too), holes filled and specks opened away; objects
    that touch the image border come last, otherwise the largest come first. The interior-most
    pixel is the one farthest from the background. An image with no objects gives its centre.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    gray = as_rgb_uint8_or_float(image, channels).astype(np.float32).mean(axis=-1)
    centre = np.array([[(gray.shape[1] - 1) / 2, (gray.shape[0] - 1) / 2]])
    if gray.min() == gray.max():
        return centre
    foreground = gray > threshold_otsu(gray)
    if foreground.mean() > 0.5:
        foreground = ~foreground
    foreground = ndi.binary_opening(ndi.binary_fill_holes(foreground), iterations=2)
    labels, n = ndi.label(foreground)
    if n == 0:
        return centre
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    on_border = np.isin(np.arange(1, n + 1), edges)
    order = np.lexsort((-areas, on_border))[:count] + 1  # inner objects first, then by size
    distance = ndi.distance_transform_edt(np.pad(foreground, 1))[1:-1, 1:-1]
    rows_cols = ndi.maximum_position(distance, labels, order)
    return np.array([[c, r] for r, c in rows_cols], dtype=np.float64)


def load_sample(name: str) -> np.ndarray:
    """A sample image bundled with scikit-image (see `SAMPLES`)."""
    import skimage.data

    if name not in SAMPLES:
        raise CliError(f"unknown sample {name!r}; bundled samples: {', '.join(SAMPLES)}")
    return np.asarray(getattr(skimage.data, name)())


def _numbers(count: int, what: str) -> Callable[[str], list[float]]:
    def parse(text: str) -> list[float]:
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values

    return parse


def _channels(text: str) -> int | list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected C or C0,C1,C2 (integers), got {text!r}")
    return values[0] if len(values) == 1 else values


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _say(text: str) -> None:
    print(text, flush=True)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registry name (see `samscope models`) or checkpoint path (default {DEFAULT_MODEL})",
    )
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    group.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32 (default); bf16 is faster only on CPUs with native bf16 (AVX512-BF16/AMX) "
        "and on GPUs; fp16 needs a GPU",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="no download progress")


def _load_session(args: argparse.Namespace, **session_options):
    """(Session, seconds): fetch the model (with progress) and load it into the process's
    shared predictor on the device (`sam_core.session`)."""
    from .session import Session

    start = time.perf_counter()
    name = args.model
    if not Path(name).expanduser().is_file():
        try:
            name = get_spec(name).name
        except UnknownModelError as exc:
            raise UnknownModelError(
                f"{name!r} is neither a known model name nor an existing checkpoint file. {exc}"
            ) from None
        fetch_checkpoint(name, progress=not args.quiet)
    session = Session(name, device=args.device, precision=args.precision, **session_options)
    try:
        session.predictor  # noqa: B018  (loads it now, so the time is reported as loading)
    except (ValueError, RuntimeError) as exc:  # device/precision not available here
        raise CliError(str(exc)) from None
    return session, time.perf_counter() - start


def _load_predictor(args: argparse.Namespace):
    """(Predictor, seconds): the session's shared predictor (see `_load_session`)."""
    session, seconds = _load_session(args)
    return session.predictor, seconds


def _timed(fn, *fn_args, **fn_kwargs):
    start = time.perf_counter()
    result = fn(*fn_args, **fn_kwargs)
    return result, time.perf_counter() - start


def _describe(array: np.ndarray) -> str:
    return f"{'x'.join(str(s) for s in array.shape)} {array.dtype}"


# --------------------------------------------------------------------------------- models


def add_models_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the known models, their sizes and whether they are cached",
        description="List the models samscope knows by name, and what is in the cache folder. "
        f"The cache folder is ${CACHE_ENV} if set; ${OFFLINE_ENV}=1 forbids downloads.",
    )
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    rows = []
    for spec in list_models():
        path = cached_path(spec.name)
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        rows.append(
            (
                spec.name + default,
                spec.arch,
                spec.description,
                f"{spec.size_bytes / 1e6:.1f}",
                f"yes  {path}" if path else "no",
            )
        )
    _say(_table(("name", "arch", "description", "MB", "cached"), rows))
    _say(f"\ncache folder: {cache_dir()}")
    _say(f"  (set {CACHE_ENV} to use another folder; {OFFLINE_ENV}=1 never downloads)")
    return 0


# -------------------------------------------------------------------------------- predict


def add_predict_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment one object in an image from points and/or a box",
        description="Segment one object: prompts are pixel coordinates x (column), y (row). "
        "Writes the best-scoring mask as a 0/255 PNG and an overlay PNG.",
    )
    parser.add_argument("image", nargs="?", help="PNG, JPEG or TIFF file")
    parser.add_argument(
        "--sample",
        choices=tuple(SAMPLES),
        metavar="NAME",
        help=f"an image bundled with scikit-image instead of IMAGE: {', '.join(SAMPLES)}. "
        "Without prompts, the point is the interior-most pixel of its largest Otsu object",
    )
    prompts = parser.add_argument_group("prompts (pixels of the original image)")
    prompts.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y",
        type=_numbers(2, "X,Y"),
        help="positive point (repeatable)",
    )
    prompts.add_argument(
        "--negative",
        action="append",
        default=[],
        metavar="X,Y",
        type=_numbers(2, "X,Y"),
        help="negative point (repeatable)",
    )
    prompts.add_argument("--box", metavar="X0,Y0,X1,Y1", type=_numbers(4, "X0,Y0,X1,Y1"))
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="mask PNG (default ./<image stem>_mask.png)")
    output.add_argument("--overlay", type=Path, help="overlay PNG (default <out stem>_overlay.png)")
    output.add_argument("--no-overlay", action="store_true", help="write no overlay")
    output.add_argument(
        "--all-masks",
        action="store_true",
        help="write all 3 candidate masks as <out stem>_0/1/2.png",
    )
    mode = output.add_mutually_exclusive_group()
    mode.add_argument(
        "--multimask",
        dest="multimask",
        action="store_true",
        default=None,
        help="3 candidates, keep the best (default for a single point)",
    )
    mode.add_argument(
        "--single",
        dest="multimask",
        action="store_false",
        help="one mask (default for several points or a box)",
    )
    image_opts = parser.add_argument_group("image")
    image_opts.add_argument(
        "--channel",
        type=_channels,
        metavar="C[,C,C]",
        help="channel(s) of a multi-channel image: one (gray) or three (RGB)",
    )
    image_opts.add_argument(
        "--normalization",
        default="auto",
        choices=("auto", "percentile", "minmax", "none"),
        help="for non-uint8 images (default: 1st-99.8th percentile)",
    )
    image_opts.add_argument(
        "--slice", type=int, metavar="Z", help="the slice of a stack (Z, H, W[, C]) to segment"
    )
    add_axes_option(image_opts)
    _add_model_options(parser)
    parser.set_defaults(run=run_predict)


def add_axes_option(group) -> None:
    """--axes: the user's names for a file's axes, overriding metadata and the shape rule."""
    group.add_argument(
        "--axes",
        metavar="AXES",
        help="what the file's axes are, e.g. CYX (channels first), ZYX (a stack), YXC; "
        "default: the file's metadata, else channels last when <= 16 (see docs)",
    )


def _read_input(args: argparse.Namespace) -> tuple[object, str]:
    """(SessionImage, stem) of the IMAGE file or the --sample image (core's reading rules)."""
    from .session import as_session_image

    if (args.image is None) == (args.sample is None):
        raise CliError("give either an IMAGE file or --sample NAME")
    source = load_sample(args.sample) if args.sample else Path(args.image)
    image = as_session_image(source, args.channel, args.normalization, getattr(args, "axes", None))
    return image, args.sample or Path(args.image).stem


def run_predict(args: argparse.Namespace) -> int:
    image, stem = _read_input(args)  # read and checked before the model is loaded
    z = args.slice
    if image.is_stack and z is None:
        raise CliError(
            f"{args.image} is a stack of {image.n_slices} slices (axes {image.axes}, shape "
            f"{image.data.shape}); choose one with --slice Z, or --axes if these are channels"
        )
    plane = image.plane(z)
    points = [*args.point, *args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    if not points and args.box is None:
        if not args.sample:
            raise CliError("no prompt: give --point X,Y (repeatable), --negative X,Y or --box")
        points, labels = seed_points(plane, 1, image.channels).tolist(), [1]
        _say(f"no prompt given: using the default point {_xy(points[0])} (see --help)")
    if args.all_masks and args.multimask is False:
        raise CliError("--all-masks needs the 3 candidates of multimask mode, not --single")
    multimask = args.multimask
    if multimask is None:
        multimask = args.all_masks or (len(points) == 1 and args.box is None)
    point_arg = points or None
    label_arg = labels or None
    build_prompts(ImageGeometry.for_shape(image.image_hw), point_arg, label_arg, args.box)

    out = args.out or Path(f"{stem}_mask.png")
    overlay_path = args.overlay or out.with_name(f"{out.stem}_overlay.png")
    session, load_s = _load_session(args)
    embedding, embed_s = _timed(session.embed, image, z)
    (masks, scores, _), predict_s = _timed(
        session.predict,
        embedding,
        points=point_arg,
        labels=label_arg,
        box=args.box,
        multimask=multimask,
    )
    predictor = session.predictor
    best = best_mask_index(masks, scores)
    where = "" if z is None else f", slice {z}"
    provenance = dict(z=z, points=point_arg, labels=label_arg, box=args.box, multimask=multimask)
    provenance["image_path"] = args.image
    _say(f"image    {args.image or 'sample ' + stem} ({_describe(plane)}{where})")
    written = []
    if args.all_masks:
        for i, mask in enumerate(masks):
            path = write_mask_png(out.with_name(f"{out.stem}_{i}.png"), mask)
            predict_sidecar(session, image, path, mask_index=i, mask=mask, **provenance)
            mark = "  <- best" if i == best else ""
            _say(f"mask {i}   score {scores[i]:.3f}, {int(mask.sum())} px -> {path}{mark}")
        shown = masks
    else:
        written.append(write_mask_png(out, masks[best]))
        predict_sidecar(session, image, out, mask_index=best, mask=masks[best], **provenance)
        which = f"best of {len(scores)}" if len(scores) > 1 else "single mask"
        _say(f"mask     {which}: score {scores[best]:.3f}, {int(masks[best].sum())} px -> {out}")
        shown = masks[best]
    if not args.no_overlay:
        from .overlay import overlay

        picture = overlay(
            plane, shown, points or None, labels or None, args.box, channels=image.channels
        )
        _say(f"overlay  {write_png(overlay_path, picture)}")
    _say(
        f"time     load {load_s:.2f} s | set_image {embed_s:.2f} s | "
        f"predict {predict_s * 1e3:.1f} ms ({predictor.model_name}, {predictor.device}, "
        f"{predictor.precision})"
    )
    return 0


def _xy(point: Sequence[float]) -> str:
    return f"({point[0]:g}, {point[1]:g})"


# ----------------------------------------------------------------------------------- demo


def add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="quick start: segment a few objects of a bundled sample image",
        description="Segment the largest objects of a sample image that ships with "
        "scikit-image, one point each (the interior-most pixel of each of the largest Otsu "
        "objects), and write masks, an overlay and a JSON summary.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (default ./demo_out)"
    )
    parser.add_argument(
        "--sample",
        choices=tuple(SAMPLES),
        default=DEMO_SAMPLE,
        help=f"sample image (default {DEMO_SAMPLE})",
    )
    parser.add_argument("--objects", type=int, default=5, help="how many objects (default 5)")
    parser.add_argument(
        "--grid",
        type=int,
        default=16,
        help="points per side of the automatic-mask grid (default 16; 0 skips automatic masks)",
    )
    _add_model_options(parser)
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.objects < 1:
        raise CliError("--objects must be at least 1")
    image = load_sample(args.sample)
    points_xy = seed_points(image, args.objects)
    _say(f"sample   {args.sample}: {SAMPLES[args.sample]} ({_describe(image)})")
    session, load_s = _load_session(args)
    predictor = session.predictor
    _say(f"model    {predictor.model_name} on {predictor.device}, {predictor.precision}")
    sample = session.load(image)
    embedding, embed_s = _timed(session.embed, sample)
    batch_points = points_xy[:, None, :]  # (B, 1, 2): one positive point per object
    (masks, scores, _), predict_s = _timed(
        session.predict,
        embedding,
        points=batch_points,
        labels=np.ones((len(points_xy), 1)),
        multimask=True,
    )
    best = np.array([best_mask_index(m, s) for m, s in zip(masks, scores, strict=True)])
    chosen = masks[np.arange(len(best)), best]  # (B, H, W)
    chosen_scores = scores[np.arange(len(best)), best]

    out = args.out
    objects, rows = [], []
    for i, (point, mask, score) in enumerate(zip(points_xy, chosen, chosen_scores, strict=True)):
        name = f"object_{i + 1:02d}.png"
        write_mask_png(out / name, mask)
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if xs.size else None
        objects.append(
            {
                "id": i + 1,
                "point_xy": [float(v) for v in point],
                "score": float(score),
                "area_px": int(mask.sum()),
                "box_xyxy": box,
                "mask": name,
            }
        )
        rows.append((i + 1, _xy(point), f"{score:.3f}", int(mask.sum()), box, name))
    from .overlay import overlay

    picture = overlay(image, chosen, points_xy, np.ones(len(points_xy)))
    write_png(out / "overlay.png", picture)
    automatic = _demo_automatic_masks(session, sample, args.grid, out) if args.grid else None
    summary = {
        "samscope": __version__,
        "model": predictor.model_name,
        "device": str(predictor.device),
        "precision": predictor.precision,
        "sample": args.sample,
        "image_shape": list(image.shape),
        "image_dtype": str(image.dtype),
        "prompt": "one positive point per object: interior-most pixel of the largest Otsu objects",
        "seconds": {"load_model": load_s, "set_image": embed_s, "predict_all": predict_s},
        "objects": objects,
        "overlay": "overlay.png",
        "automatic": automatic,
        "python": platform.python_version(),
    }
    write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())

    _say("")
    _say(_table(("object", "point (x, y)", "score", "area px", "box x0,y0,x1,y1", "mask"), rows))
    _say("")
    per_object = predict_s * 1e3 / len(points_xy)
    _say(
        f"time     load model {load_s:.2f} s | set_image {embed_s:.2f} s | predict "
        f"{len(points_xy)} objects {predict_s * 1e3:.0f} ms ({per_object:.1f} ms each)"
    )
    if automatic is not None:
        _say(
            f"automatic {automatic['masks']} masks from a {args.grid}x{args.grid} grid in "
            f"{automatic['seconds']:.1f} s -> {automatic['labels']}, {automatic['overlay']}"
        )
    _say(f"wrote    {out}/: {len(objects)} masks, overlay.png, summary.json")
    return 0


def _demo_automatic_masks(session, sample, grid: int, out: Path) -> dict:
    """Segment everything in `sample` (its embedding comes from the session's cache); write a
    label TIFF, an overlay and the records (COCO RLE) to `out`; return a summary."""
    import tifffile
    from tqdm import tqdm

    from .automatic import masks_to_label_image
    from .overlay import overlay

    image = sample.data
    amg = session.automatic_generator(points_per_side=grid, output_mode="coco_rle")
    start = time.perf_counter()
    with tqdm(total=1, desc="automatic masks", unit="step", leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        candidates = session.automatic_candidates(sample, None, amg, progress)
    records = amg.select(candidates)
    seconds = time.perf_counter() - start
    labels = masks_to_label_image(records, image.shape[:2])
    tmp = out / ".labels.tif.tmp"
    tifffile.imwrite(tmp, labels, compression="zlib")
    tmp.replace(out / "labels.tif")
    masks = labels[None] == np.arange(1, len(records) + 1)[:, None, None] if records else None
    write_png(out / "automatic_overlay.png", overlay(image, masks))
    write_bytes(out / "automatic.json", (json.dumps(records) + "\n").encode())
    return {
        "points_per_side": grid,
        "masks": len(records),
        "seconds": round(seconds, 2),
        "labels": "labels.tif",
        "overlay": "automatic_overlay.png",
        "records": "automatic.json",
    }


# ----------------------------------------------------------------------------------- main

COMMANDS: tuple[Callable[..., None], ...] = (
    add_models_command,
    add_predict_command,
    add_demo_command,
    add_evaluate_command,
    add_finetune_command,
    add_train_instance_command,
    add_segment_command,
    add_embed_command,
    add_fiftyone_install_command,
    add_engine_commands,
    add_export_onnx_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment Anything for scientific images (sam_core).",
        epilog=f"Weights are cached in {cache_dir()} (${CACHE_ENV} overrides; "
        f"${OFFLINE_ENV}=1 never downloads).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage or input error, 1 I/O error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.run(args)
    except SamscopeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad input a library refused (e.g. Pillow, tifffile, numpy)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that can't be written
        target = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{target}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
