"""``samscope evaluate``: the paper's evaluation protocols on folders of labelled images.

    samscope evaluate data/grabcut data/coco_mval_dev --clicks 20 --out eval_out
    samscope evaluate data/dsb2018_fluo_dev --protocol point,box,automatic --limit 10
    samscope evaluate data/bsds500_val --protocol edges --limit 20

Writes ``<out>/evaluation.json|.md|.csv`` and ``evaluation_clicks.png`` (see
`sam_core.evaluation.report`) and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SamscopeError

if TYPE_CHECKING:
    from .evaluation.datasets import EvalSet

# `sam_core.cli` imports this module for its COMMANDS, so cli helpers and the evaluation
# package (pycocotools, matplotlib) are imported inside the functions.
MAX_CLICKS = 20  # = sam_core.evaluation.metrics.MAX_CLICKS (checked by the tests)
PROMPT_PROTOCOLS = ("point", "clicks", "box", "noisy_box")
PROTOCOLS = (*PROMPT_PROTOCOLS, "automatic", "edges")


class EvaluateUsageError(SamscopeError):
    """A bad combination of `samscope evaluate` options."""


def _protocol_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROTOCOLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown protocol(s) {unknown or text!r}; choose from {', '.join(PROTOCOLS)}"
        )
    return names


def add_evaluate_command(subparsers) -> None:
    from .cli import _add_model_options

    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on folders of images with instance labels (mIoU, NoC, AP, ODS)",
        description="Run the Segment Anything paper's evaluation protocols on one or more "
        "folders laid out as images/ + labels/ (+ manifest.json, ignore/, instances/, edges/): "
        "1-point mIoU (most confident and oracle), interactive clicks (mIoU after 1..N, "
        f"NoC@85/90 capped at {MAX_CLICKS}), box and noisy-box mIoU, automatic-mask AP "
        "(pycocotools), and BSDS edge ODS/OIS/AP. See docs/evaluation.md.",
    )
    parser.add_argument("sets", nargs="+", type=Path, help="evaluation set folder(s)")
    parser.add_argument(
        "--protocol",
        type=_protocol_list,
        default=None,
        help=f"comma-separated, from {', '.join(PROTOCOLS)} (default: edges for sets with "
        "edges/, else point,clicks,box,noisy_box)",
    )
    parser.add_argument(
        "--clicks", type=int, default=MAX_CLICKS, help=f"clicks per object (default {MAX_CLICKS})"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument(
        "--split-binary-labels",
        action="store_true",
        help="label images that are binary (every object 1, 255 or True) with several separate "
        "objects are refused, since each would count as one merged object; with this flag each "
        "connected region is one object (objects that touch stay merged)",
    )
    parser.add_argument(
        "--objects-per-image",
        type=int,
        default=None,
        help="evaluate at most this many objects per image (seeded random draw)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of draws and box noise")
    parser.add_argument(
        "--no-mask-input",
        action="store_true",
        help="don't feed the previous low-res logits back with each click",
    )
    parser.add_argument(
        "--edge-points", type=int, default=16, help="edge grid points per side (default 16)"
    )
    parser.add_argument(
        "--edge-matching",
        choices=("one-to-one", "tolerance"),
        default="one-to-one",
        help="BSDS pixel matching: one-to-one (like the benchmark, default) or tolerance only",
    )
    parser.add_argument(
        "--amg-points", type=int, default=32, help="automatic-mask grid points per side"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval_out"), help="output folder (default ./eval_out)"
    )
    _add_model_options(parser)
    parser.set_defaults(run=run_evaluate)


SPLIT_FIX = (
    "rerun with --split-binary-labels to make each connected region one object (objects that "
    "touch stay merged)"
)


def load_labelled_set(folder: Path, split_binary: bool, limit: int | None = None) -> EvalSet:
    """`load_eval_set` for `evaluate` and `finetune`: a binary label image of many objects is
    split into its connected regions (one ``samscope: warning:`` line each) with
    ``--split-binary-labels``, else refused by a `BinaryLabelsError` naming the file and flag."""
    import sys

    from .cli import PROG
    from .evaluation.datasets import load_eval_set
    from .label_check import BinaryLabelsError

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    try:
        return load_eval_set(folder, limit=limit, split_binary=split_binary, warn=warn)
    except BinaryLabelsError as exc:
        raise exc.with_fix(SPLIT_FIX) from None


def _bar(total: int, what: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=what, unit="img", leave=True)

    def update(done: int, _total: int) -> None:
        bar.n = done
        bar.refresh()
        if done >= _total:
            bar.close()

    return update


def run_evaluate(args: argparse.Namespace) -> int:
    from .cli import _load_predictor, _say
    from .evaluation.report import summary_rows, to_markdown, write_report
    from .evaluation.runner import (
        evaluate_automatic,
        evaluate_edges,
        evaluate_prompts,
        make_generator,
    )

    if args.clicks < 1:
        raise EvaluateUsageError("--clicks must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise EvaluateUsageError("--limit must be at least 1")
    if args.objects_per_image is not None and args.objects_per_image < 1:
        raise EvaluateUsageError("--objects-per-image must be at least 1")
    sets = [  # fail early
        load_labelled_set(path, args.split_binary_labels, args.limit) for path in args.sets
    ]
    predictor, _ = _load_predictor(args)
    results = []
    for eval_set in sets:
        has_edges = any(s.boundaries is not None for s in eval_set.samples)
        protocols = args.protocol or (["edges"] if has_edges else list(PROMPT_PROTOCOLS))
        for name, reason in eval_set.skipped:
            _say(f"skipped  {eval_set.name}/{name}: {reason}")
        total = len(eval_set.samples)
        prompt_protocols = [p for p in protocols if p in PROMPT_PROTOCOLS]
        if prompt_protocols:
            if has_edges:
                raise EvaluateUsageError(
                    f"{eval_set.name} has edge ground truth only: use --protocol edges"
                )
            results.append(
                evaluate_prompts(
                    predictor,
                    eval_set,
                    prompt_protocols,
                    n_clicks=args.clicks,
                    objects_per_image=args.objects_per_image,
                    seed=args.seed,
                    use_mask_input=not args.no_mask_input,
                    progress=_bar(total, f"{eval_set.name} prompts"),
                )
            )
        if "automatic" in protocols:
            generator = make_generator(predictor, points_per_side=args.amg_points)
            results.append(
                evaluate_automatic(
                    generator, eval_set, progress=_bar(total, f"{eval_set.name} automatic")
                )
            )
        if "edges" in protocols:
            if not has_edges:
                raise EvaluateUsageError(
                    f"{eval_set.name} has no edges/ ground truth for --protocol edges"
                )
            results.append(
                evaluate_edges(
                    predictor,
                    eval_set,
                    args.edge_points,
                    one_to_one=args.edge_matching == "one-to-one",
                    progress=_bar(total, f"{eval_set.name} edges"),
                )
            )
    written = write_report(results, args.out)
    _say("")
    _say(to_markdown(summary_rows(results)))
    _say(f"wrote    {', '.join(str(p) for p in written)}")
    return 0
