"""``samscope train-instance`` and the instance modes of ``samscope segment`` (issue 15).

    samscope train-instance --data data/nuclei --out runs/nuclei --val-count 10 --epochs 30
    samscope segment images/ --out masks --model runs/nuclei/model.pth --mode decoder
    samscope segment images/ --out masks --mode decoder+prompts \
        --decoder runs/nuclei/instance_decoder.pth

Training reads ``images/`` + ``labels/`` like ``samscope finetune``, embeds every image once
with the frozen encoder into the zarr embedding cache (``--cache``, default ``<out>/embeddings``)
and trains `sam_core.instance`'s decoder; running the same command again resumes a stopped
run (``--restart`` starts over). Writes ``instance_decoder.pth``, ``model.json`` (entry
``instance_decoder``) and ``model.pth`` (the SAM weights it belongs to) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import SamscopeError

SEGMENT_MODES = ("grid", "decoder", "decoder+prompts")


class InstanceUsageError(SamscopeError):
    """A bad combination of instance-decoder options."""


# --------------------------------------------------------------------- segment --mode
def add_instance_segment_options(parser: argparse.ArgumentParser) -> None:
    """--mode and the decoder's options, added to `samscope segment`."""
    group = parser.add_argument_group("instance decoder (--mode decoder, decoder+prompts)")
    group.add_argument(
        "--mode",
        choices=SEGMENT_MODES,
        default="grid",
        help="grid: SAM's point-grid automatic masks (default); decoder: a trained instance "
        "decoder + watershed; decoder+prompts: its objects as prompts for SAM's mask decoder",
    )
    group.add_argument(
        "--decoder",
        type=Path,
        metavar="FILE",
        help="instance_decoder.pth (default: the one listed in model.json beside --model)",
    )
    for flag, text in (
        ("--fg-thresh", "foreground probability threshold"),
        ("--centre-thresh", "seed threshold on the centre map"),
        ("--boundary-thresh", "seed threshold on the boundary-distance map"),
    ):
        group.add_argument(flag, type=float, metavar="X", help=f"{text} (default: the decoder's)")
    group.add_argument("--min-area", type=int, metavar="N", help="drop objects below N pixels")
    group.add_argument(
        "--prompt", choices=("point", "box"), default="point", help="decoder+prompts: prompt kind"
    )
    group.add_argument(
        "--apg-iou-thresh", type=float, default=0.7, metavar="X", help="decoder+prompts (0.7)"
    )
    group.add_argument(
        "--apg-stability-thresh",
        type=float,
        default=0.8,
        metavar="X",
        help="decoder+prompts: stability filter (0.8)",
    )


def instance_settings(args: argparse.Namespace) -> dict:
    """{"mode", "instance"} for `SegmentSettings`; checks the decoder before any image runs."""
    mode = getattr(args, "mode", "grid")
    if mode == "grid":
        return {"mode": "grid", "instance": {}}
    from .instance import decoder_beside, load_decoder
    from .instance.checkpoint import check_encoder
    from .instance.postprocess import InstanceThresholds
    from .instance.prompting import PromptSettings

    path = args.decoder or decoder_beside(args.model)
    if path is None:
        raise InstanceUsageError(
            f"--mode {mode} needs an instance decoder: none is listed beside --model "
            f"{args.model}. Train one (samscope train-instance --data DIR --out DIR) and pass "
            "--model DIR/model.pth, or give --decoder FILE"
        )
    decoder = load_decoder(path)
    check_encoder(decoder, _model_sha256(args.model), args.model)
    t = decoder.thresholds
    try:
        thresholds = InstanceThresholds(
            t.foreground if args.fg_thresh is None else args.fg_thresh,
            t.centre if args.centre_thresh is None else args.centre_thresh,
            t.boundary if args.boundary_thresh is None else args.boundary_thresh,
            t.min_area if args.min_area is None else args.min_area,
        )
        prompts = PromptSettings(
            prompt=args.prompt,
            pred_iou_thresh=args.apg_iou_thresh,
            stability_score_thresh=args.apg_stability_thresh,
            box_nms_thresh=args.box_nms_thresh,
        )
    except ValueError as exc:
        raise InstanceUsageError(str(exc)) from None
    return {
        "mode": mode,
        "instance": {
            "decoder": str(Path(path).expanduser().resolve()),
            "thresholds": thresholds.to_dict(),
            "prompts": prompts.to_dict(),
        },
    }


def _model_sha256(model: str) -> str:
    from .checkpoints import sha256_of
    from .registry import get_spec

    path = Path(model).expanduser()
    if path.is_file():
        return sha256_of(path)
    return get_spec(model).sha256


# ---------------------------------------------------------------------- train-instance
def add_train_instance_command(subparsers) -> None:
    from .cli import _add_model_options
    from .instance import TrainConfig

    parser = subparsers.add_parser(
        "train-instance",
        help="train an instance decoder on SAM's embeddings (images/ + labels/)",
        description="Train the automatic instance decoder (foreground + distance maps + "
        "watershed) on a folder laid out as images/ + labels/ (instance ids, 0 = "
        "background), the SAM encoder frozen and its embeddings cached. Validation each "
        "epoch prints AP50, AP and mean segmentation accuracy. Running the same command "
        "again resumes. See docs/instance-segmentation.md.",
    )
    parser.add_argument("--data", type=Path, required=True, help="training set folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--val", type=Path, help="validation set folder")
    group.add_argument(
        "--val-count",
        type=int,
        help="hold out this many images (the seeded draw `samscope finetune` uses; "
        "default 20%%, at least 1)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs (30)")
    parser.add_argument("--batch-size", type=int, default=8, help="image crops per step (8)")
    parser.add_argument("--crop", type=int, default=128, help="random crop side, pixels (128)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=TrainConfig.repeats,
        help=f"passes over the images per epoch ({TrainConfig.repeats})",
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (3e-3)")
    parser.add_argument("--no-augment", action="store_true", help="no flips / quarter turns")
    parser.add_argument("--cache", type=Path, help="zarr embedding cache (default OUT/embeddings)")
    parser.add_argument("--limit", type=int, help="use at most N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-binary-labels",
        action="store_true",
        help="make each connected region of a binary label image one object",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped run in --out (the default when there is one); an error "
        "if there is none",
    )
    resume.add_argument("--restart", action="store_true", help="ignore an earlier run in --out")
    _add_model_options(parser)
    parser.set_defaults(run=run_train_instance)


def run_train_instance(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli import _load_session, _say
    from .cli_evaluate import load_labelled_set
    from .instance import TrainConfig, prepare_items, train_decoder
    from .instance.training import RESUME_FILE
    from .training import split_samples

    for name in ("epochs", "batch_size", "crop", "repeats"):
        if getattr(args, name) < 1:
            raise InstanceUsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.resume and not (args.out / RESUME_FILE).is_file():
        raise InstanceUsageError(f"--resume: no stopped run in {args.out} ({RESUME_FILE})")
    samples = load_labelled_set(args.data, args.split_binary_labels, args.limit).samples
    if args.val is not None:
        train, val = samples, load_labelled_set(args.val, args.split_binary_labels).samples
    else:
        if len(samples) < 2:
            raise InstanceUsageError("need at least 2 images to hold some out; or give --val")
        count = args.val_count if args.val_count is not None else max(1, len(samples) // 5)
        if not 0 < count < len(samples):
            raise InstanceUsageError(f"--val-count must be between 1 and {len(samples) - 1}")
        train, val = split_samples(samples, count, args.seed)
    cache = args.cache or args.out / "embeddings"
    session, _ = _load_session(args, cache_dir=cache)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop=args.crop,
        repeats=args.repeats,
        lr=args.lr,
        augment=not args.no_augment,
        seed=args.seed,
        device=None if args.device == "auto" else args.device,
    )

    def warn(message: str) -> None:
        tqdm.write(f"warning  {message}")  # on its own line, above the embeddings bar

    with tqdm(total=len(train) + len(val), desc="embeddings", unit="img") as bar:
        items = prepare_items(
            session, [*train, *val], config.work_side, lambda d, t: bar.update(d - bar.n), warn
        )
    names = {s.name for s in val}
    train_items = [i for i in items if i.name not in names]
    val_items = [i for i in items if i.name in names]
    if not train_items:
        raise InstanceUsageError("no training image with objects left")
    _say(f"train    {len(train_items)} images from {args.data}; validate on {len(val_items)}")
    bar = tqdm(total=None, desc="training", unit="step", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = train_decoder(
            session,
            train_items,
            val_items,
            args.out,
            config,
            resume=not args.restart,
            log=lambda line: bar.write(line),
            progress=progress,
            data_info={"train_dir": str(args.data), "val_dir": str(args.val or args.data)},
        )
    finally:
        bar.close()
    _say(
        f"wrote    {args.out}/instance_decoder.pth, model.json, model.pth; segment with "
        f"`samscope segment IMAGES --out DIR --model {args.out}/model.pth --mode decoder`"
    )
    return 0 if result.history else 1
