"""Zero-shot MobileSAM baselines on the development sets in ../shared/data.

    .venv/bin/python benchmarks/bench_evaluation.py              # subsamples below
    .venv/bin/python benchmarks/bench_evaluation.py --scale 3    # 3x more images per set

1-point mIoU (most confident and oracle), mIoU after 1..N clicks and NoC@85/90 (clicks capped
at 20), box and noisy-box mIoU on the prompt sets; automatic-mask AP/AP50/AR on nuclei and COCO;
BSDS500 edge ODS/OIS/AP. Each set is subsampled (first images of its manifest, seeded object
draws) so a run fits a few minutes per set on a 2-core CPU; the subsample is written with the
figures. Results: ``benchmarks/results/evaluation_zeroshot.json|md|csv`` and
``evaluation_zeroshot_clicks.png``, rewritten after each set (a cut-short run keeps what it
finished).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sam_core import Predictor, load_model
from sam_core.evaluation import (
    evaluate_automatic,
    evaluate_edges,
    evaluate_prompts,
    load_eval_set,
    make_generator,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

# (set, protocol, images, objects per image, clicks)
PLAN = [  # ordered so that a cut-short run has every kind of figure early
    ("grabcut", "prompts", 10, None, 20),
    ("dsb2018_fluo_dev", "prompts", 4, 8, 9),
    ("dsb2018_fluo_dev", "automatic", 4, None, 0),
    ("bsds500_val", "edges", 3, None, 0),
    ("coco_mval_dev", "prompts", 10, None, 20),
    ("coco_val2017_multi", "automatic", 4, None, 0),
    ("dsb2018_histo_he", "prompts", 3, 8, 9),
    ("isbi2012_em_membranes", "prompts", 2, 8, 9),
    ("stardist_pkg", "prompts", 1, 8, 9),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply images per set")
    parser.add_argument("--amg-points", type=int, default=16, help="AMG grid points per side")
    parser.add_argument("--only", nargs="*", default=None, help="set names to run")
    parser.add_argument("--stem", default="evaluation_zeroshot")
    args = parser.parse_args()

    predictor = Predictor(load_model("vit_t"), device="cpu")
    results = []
    started = time.perf_counter()
    for name, protocol, images, objects, clicks in PLAN:
        if args.only and name not in args.only:
            continue
        limit = max(1, round(images * args.scale))
        eval_set = load_eval_set(DATA / name, limit=limit)
        print(f"{name} {protocol}: {len(eval_set.samples)} images", flush=True)
        if protocol == "prompts":
            result = evaluate_prompts(
                predictor, eval_set, n_clicks=clicks, objects_per_image=objects, seed=0
            )
            result.pop("per_object_point", None)
        elif protocol == "automatic":
            generator = make_generator(predictor, points_per_side=args.amg_points)
            result = evaluate_automatic(generator, eval_set)
            result["amg_points_per_side"] = args.amg_points
        else:
            result = evaluate_edges(predictor, eval_set, points_per_side=16)
        result["subsample"] = f"first {len(eval_set.samples)} images of the manifest" + (
            f", {objects} objects per image (seeded draw)" if objects else ""
        )
        results.append(result)
        meta = {
            "device": f"cpu x{torch.get_num_threads()}",
            "machine": platform.processor() or platform.machine(),
            "model": "vit_t (MobileSAM), fp32",
            "note": "measured under load: the 2-core machine was shared with other jobs",
            "total_seconds": time.perf_counter() - started,
        }
        write_report(results, RESULTS, stem=args.stem)
        (RESULTS / f"{args.stem}_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(json.dumps(result, indent=1)[:1500], flush=True)


if __name__ == "__main__":
    main()
