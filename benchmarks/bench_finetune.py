"""Does fine-tuning pay? MobileSAM on dsb2018_fluo_dev: train on 40 images, validate on 10.

    .venv/bin/python benchmarks/bench_finetune.py                    # defaults below
    .venv/bin/python benchmarks/bench_finetune.py --set dsb2018_histo_he --val-count 6

Reports the validation 1-point mIoU (most confident of 3) before and after, automatic-mask
AP/AP50 before and after (`--amg-points 0` skips it), training time and peak resident memory
(CPU) or peak CUDA memory. Weights go to a temporary folder (`--run-dir` to keep them); the
figures to ``benchmarks/results/evaluation_finetune_<set>.json|md``.

Automatic masks are scored twice for each model: with the generator's default thresholds
(predicted IoU > 0.88, stability >= 0.95) and with thresholds searched on `--search-count`
*training* images (`sam_core.evaluation.search_thresholds`), never on the validation images.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from sam_core import Predictor, load_model
from sam_core.evaluation import (
    evaluate_automatic,
    load_eval_set,
    make_generator,
    search_thresholds,
)
from sam_core.evaluation.datasets import EvalSet
from sam_core.evaluation.threshold_search import IOU_GRID
from sam_core.training import FinetuneConfig, finetune, split_samples

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def _amg_scores(model, val, search_images, points: int) -> dict | None:
    """Val AP with the default thresholds and with thresholds searched on `search_images`."""
    if points <= 0:
        return None
    predictor = Predictor(model, device=model.device)
    generator = make_generator(
        predictor, points_per_side=points, iou_floor=min(IOU_GRID), stability_floor=0.5
    )
    keys = ("AP", "AP50", "AP75", "AR@100", "n_predictions", "seconds")
    eval_set = EvalSet(name="val", root=Path("."), samples=list(val))
    default = evaluate_automatic(generator, eval_set)
    search = search_thresholds(generator, search_images)
    generator.pred_iou_thresh = search["pred_iou_thresh"]
    generator.stability_score_thresh = search["stability_score_thresh"]
    searched = evaluate_automatic(generator, eval_set)
    return {
        "default": {k: default[k] for k in keys},
        "searched": {k: searched[k] for k in keys},
        "thresholds": {
            "pred_iou_thresh": search["pred_iou_thresh"],
            "stability_score_thresh": search["stability_score_thresh"],
            "search_AP50_on_train_subset": search["value"],
        },
    }


def _options(config: FinetuneConfig) -> str:
    """The options beyond the paper's recipe that a run used, for the summary line."""
    used = [name for name in ("flips", "augment") if getattr(config, name)]
    if config.first_point != "uniform":
        used.append(f"first point {config.first_point}")
    if config.iou_rank_weight:
        used.append(f"IoU rank weight {config.iou_rank_weight}")
    return "".join(f", {option}" for option in used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="dsb2018_fluo_dev")
    parser.add_argument("--val-count", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="images of the set to use")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--objects-per-step", type=int, default=4)
    parser.add_argument("--point-rounds", type=int, default=1)
    parser.add_argument("--refine-rounds", type=int, default=1)
    parser.add_argument("--trainable", default="decoder")
    parser.add_argument("--amg-points", type=int, default=16)
    parser.add_argument(
        "--search-count", type=int, default=8, help="training images for the threshold search"
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--first-point", default="uniform", choices=("uniform", "interior"))
    parser.add_argument("--iou-rank-weight", type=float, default=0.0)
    parser.add_argument("--flips", action="store_true", help="add left-right mirrored images")
    parser.add_argument("--augment", action="store_true", help="random flips and quarter turns")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out-suffix", default="", help="appended to the results' file name")
    parser.add_argument("--note", default="quiet machine apart from other light work")
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    samples = load_eval_set(DATA / args.set, limit=args.limit).samples
    train, val = split_samples(samples, args.val_count, seed=0)
    model = load_model("vit_t")
    search_images = train[: args.search_count]
    ap_before = _amg_scores(model, val, search_images, args.amg_points)
    config = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        trainable=args.trainable,
        objects_per_step=args.objects_per_step,
        point_rounds=args.point_rounds,
        refine_rounds=args.refine_rounds,
        warmup_steps=args.warmup,
        first_point=args.first_point,
        flips=args.flips,
        augment=args.augment,
        iou_rank_weight=args.iou_rank_weight,
    )
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="samscope-finetune-"))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    card = finetune(
        model, train, val, run_dir, config, data_info={"set": args.set}, resume=False, log=print
    )
    wall = time.perf_counter() - started
    tuned = load_model(run_dir / "model.pth")
    ap_after = _amg_scores(tuned, val, search_images, args.amg_points)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result = {
        "set": args.set,
        "train_images": len(train),
        "val_images": len(val),
        "val_objects": sum(s.n_instances for s in val),
        "config": card["config"],
        "val_1point_miou_before": card["baseline_val_miou"],
        "val_1point_miou_after": card["history"][-1]["val_miou"],
        "history": card["history"],
        "amg_points_per_side": args.amg_points,
        "amg_before": ap_before,
        "amg_after": ap_after,
        "training_seconds": card["seconds_training"],
        "wall_seconds_incl_embeddings_and_validation": wall,
        "peak_rss_gb": peak_rss_gb,
        "peak_cuda_gb": torch.cuda.max_memory_allocated() / 1e9
        if torch.cuda.is_available()
        else None,
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "machine": platform.processor() or platform.machine(),
        "note": args.note,
        "run_dir": str(run_dir),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"evaluation_finetune_{args.set}{args.out_suffix}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Fine-tuning MobileSAM on {args.set} ({len(train)} train / {len(val)} val images)",
        "",
        "| metric | before | after |",
        "| --- | ---: | ---: |",
        f"| val 1-point mIoU | {result['val_1point_miou_before']:.4f} | "
        f"{result['val_1point_miou_after']:.4f} |",
    ]
    if ap_before and ap_after:
        for mode, label in (("default", "default thresholds"), ("searched", "searched thresholds")):
            for key in ("AP50", "AP"):
                lines.append(
                    f"| val automatic {key}, {label} | {ap_before[mode][key]:.4f} | "
                    f"{ap_after[mode][key]:.4f} |"
                )
        before_t, after_t = ap_before["thresholds"], ap_after["thresholds"]
        lines.append(
            f"| searched thresholds (pred IoU, stability), on {len(search_images)} training "
            f"images | {before_t['pred_iou_thresh']}, {before_t['stability_score_thresh']} | "
            f"{after_t['pred_iou_thresh']}, {after_t['stability_score_thresh']} |"
        )
    lines += [
        "",
        f"Training {result['training_seconds']:.0f} s ({args.epochs} epochs, "
        f"{args.objects_per_step} objects/step, 1 + {args.point_rounds} + {args.refine_rounds} "
        f"rounds, {args.trainable}{_options(config)}), peak RSS {peak_rss_gb:.2f} GB, "
        f"{result['device']}. "
        f"{result['note']}.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
