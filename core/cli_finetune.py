"""``samscope finetune``: fine-tune a model on a folder of images with instance labels.

    samscope finetune data/nuclei --val-count 10 --epochs 5 --out runs/nuclei
    samscope finetune data/train --val data/val --trainable decoder+prompt --flips
    samscope predict img.png --point 40,60 --model runs/nuclei/model.pth

Writes ``model.pth`` (official-format weights), ``best.pth``, ``model.json`` (card) and
``resume.pth`` to ``--out``; running the same command again resumes an interrupted run. To
train further on new labels (the data engine's retrain, paper §4), start a new run from the
last model: ``--model runs/nuclei/model.pth --out runs/nuclei2`` (the new card names that
file and its sha256 as its base); a finished run in ``--out`` is not silently "resumed".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import SamscopeError

TRAINABLE = ("decoder", "decoder+prompt", "partial", "all")  # = training.TRAINABLE (tested)
FIRST_POINTS = ("uniform", "interior")  # = training.trainer.FIRST_POINTS (tested)


class FinetuneUsageError(SamscopeError):
    """A bad combination of `samscope finetune` options."""


def add_finetune_command(subparsers) -> None:
    from .cli import _add_model_options

    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on images with instance labels (images/ + labels/)",
        description="Fine-tune SAM with the paper's loss (20:1 focal:dice on the best of the "
        "multimask outputs, MSE on the IoU head) and simulated interactive prompts, on a "
        "folder laid out as images/ + labels/ (instance ids, 0 = background). With a frozen "
        "encoder each image is embedded once. See docs/evaluation.md.",
    )
    parser.add_argument("train", type=Path, help="training set folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--val", type=Path, default=None, help="validation set folder")
    group.add_argument(
        "--val-count",
        type=int,
        default=None,
        help="hold out this many training images (seeded draw) for validation "
        "(default: 20%% of them, at least 1)",
    )
    parser.add_argument("--out", type=Path, default=Path("finetune_out"), help="output folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=20, help="linear warmup steps")
    parser.add_argument("--trainable", choices=TRAINABLE, default="decoder")
    parser.add_argument(
        "--objects-per-step", type=int, default=16, help="objects per image and step"
    )
    parser.add_argument("--point-rounds", type=int, default=8, help="error-point rounds (8)")
    parser.add_argument("--refine-rounds", type=int, default=2, help="mask-only rounds (2)")
    parser.add_argument("--flips", action="store_true", help="add left-right mirrored images")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random flips and quarter turns: with a trained encoder (partial, all) each step "
        "shows the image under a random one of the 8; with a frozen one all 8 are embedded "
        "once and each epoch goes through them (8x the steps)",
    )
    parser.add_argument(
        "--first-point",
        choices=FIRST_POINTS,
        default="uniform",
        help="where the first simulated click lands: anywhere in the object (the paper), or "
        "in its interior, where analysts click",
    )
    parser.add_argument(
        "--iou-rank-weight",
        type=float,
        default=0.0,
        help="weight of a ranking term that trains the IoU head to put the best of the 3 masks "
        "first (0: the paper's MSE only)",
    )
    parser.add_argument(
        "--split-binary-labels",
        action="store_true",
        help="label images that are binary (every object 1, 255 or True) are refused, since "
        "they would train as one merged object; with this flag each connected region becomes "
        "one object (objects that touch stay merged)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use at most N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default=None, help="architecture of a --model checkpoint file")
    parser.add_argument("--restart", action="store_true", help="ignore an earlier run in --out")
    parser.add_argument(
        "--no-threshold-search",
        action="store_true",
        help="skip choosing automatic-mask thresholds for the new model on the validation "
        "images (stored in model.json; `samscope segment` then uses them by default)",
    )
    _add_model_options(parser)
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli import _say
    from .cli_evaluate import load_labelled_set
    from .loading import load_model, weights_fingerprint
    from .training import FinetuneConfig, finetune, split_samples

    for name in ("epochs", "objects_per_step"):
        if getattr(args, name) < 1:
            raise FinetuneUsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.precision != "fp32":
        raise FinetuneUsageError("fine-tuning runs in fp32; drop --precision")
    samples = load_labelled_set(args.train, args.split_binary_labels, args.limit).samples
    if args.val is not None:
        train, val = samples, load_labelled_set(args.val, args.split_binary_labels).samples
    else:
        count = args.val_count if args.val_count is not None else max(1, len(samples) // 5)
        if len(samples) < 2:
            raise FinetuneUsageError("need at least 2 images to hold some out; or give --val")
        if not 0 < count < len(samples):
            raise FinetuneUsageError(f"--val-count must be between 1 and {len(samples) - 1}")
        train, val = split_samples(samples, count, args.seed)
    if not args.restart:
        _refuse_finished_run(args.out, args.epochs, args.model)
    model = load_model(args.model, device="cpu", arch=args.arch)
    if getattr(model, "checkpoint_path", None) is not None:
        weights_fingerprint(model)  # the card's base_sha256 for a checkpoint-file base too
    config = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        trainable=args.trainable,
        objects_per_step=args.objects_per_step,
        point_rounds=args.point_rounds,
        refine_rounds=args.refine_rounds,
        flips=args.flips,
        augment=args.augment,
        first_point=args.first_point,
        iou_rank_weight=args.iou_rank_weight,
        split_binary=args.split_binary_labels,
        seed=args.seed,
        device=None if args.device == "auto" else args.device,
    )
    _say(f"train    {len(train)} images from {args.train}; validate on {len(val)}")
    bar = tqdm(total=None, desc="fine-tuning", unit="step")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        card = finetune(
            model,
            train,
            val,
            args.out,
            config,
            data_info={"train_dir": str(args.train), "val_dir": str(args.val or args.train)},
            resume=not args.restart,
            progress=progress,
            log=lambda line: bar.write(line),
        )
    finally:
        bar.close()
    _say(
        f"done     {card.get('epochs_done', 0)} epochs; val 1-point mIoU "
        f"{card.get('baseline_val_miou', float('nan')):.4f} before -> "
        f"{card['history'][-1]['val_miou']:.4f} after"
        if card["history"]
        else "done"
    )
    if val and card["history"] and not args.no_threshold_search:
        _search_automatic_thresholds(model, val, args.out, card)
    _say(f"wrote    {args.out}/model.pth (load with --model {args.out}/model.pth), model.json")
    return 0


def _refuse_finished_run(out: Path, epochs: int, model: str) -> None:
    """FinetuneUsageError when `out` holds a run that already did `epochs` epochs: resuming it
    would train no further while its card named the new data (the retrain of the data engine
    starts a new run from that run's model instead)."""
    import json

    from .training.checkpointing import CARD_FILE, MODEL_FILE, RESUME_FILE

    out = Path(out).expanduser()
    if not (out / RESUME_FILE).is_file() or not (out / CARD_FILE).is_file():
        return
    try:
        done = int(json.loads((out / CARD_FILE).read_text()).get("epochs_done", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return  # a damaged card: the resume itself reports it
    if done >= epochs:
        raise FinetuneUsageError(
            f"{out} holds a finished run ({done} of --epochs {epochs} done), so there is nothing "
            f"to resume. To train further on new labels start from its model in a new folder: "
            f"--model {out / MODEL_FILE} --out <new folder> (base now: {model}); "
            "or --restart to start this folder over"
        )


def _search_automatic_thresholds(model, val, out: Path, card: dict) -> None:
    """Store in the card the automatic-mask thresholds that suit the fine-tuned model."""
    from tqdm import tqdm

    from .cli import _say
    from .training.tuned_thresholds import store_tuned_thresholds

    with tqdm(total=len(val), desc="automatic-mask thresholds", unit="image") as bar:
        found = store_tuned_thresholds(
            model, val, out, card, progress=lambda done, total: bar.update(done - bar.n)
        )
    _say(
        f"automatic masks: pred IoU > {found['pred_iou_thresh']}, stability >= "
        f"{found['stability_score_thresh']} suit this model (val AP50 {found['value']:.3f}); "
        "stored in model.json, used by `samscope segment --model` unless you set them"
    )
