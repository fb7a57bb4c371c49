"""Instance decoder (issue 15): accuracy on the nuclei and H&E splits, time per 1024² image.

    .venv/bin/python benchmarks/bench_instance.py              # train, evaluate, time (CPU)
    .venv/bin/python benchmarks/bench_instance.py --device cuda
    .venv/bin/python benchmarks/bench_instance.py --skip-train --runs DIR   # decoders in DIR/<set>

For each set (`dsb2018_fluo_dev` 40 / 10 and `dsb2018_histo_he` 24 / 6, the seeded split of
`samscope finetune --val-count`): embed every image (MobileSAM, frozen), train the decoder
(`sam_core.instance.train_decoder`, default settings), then score the validation images with
`Session.instance_segment` in ``decoder`` mode (default and tuned thresholds) and
``decoder+prompts`` mode: AP50 and AP (0.5:0.95) with pycocotools (`sam_core.evaluation`), mean
segmentation accuracy. The tuned thresholds and the best epoch are chosen on the same
validation images (as `samscope finetune` chooses its thresholds), so the default-threshold
row is the untuned figure. Then one 1024 x 1024 crop of the largest nuclei image is timed:
the encoder alone, ``decoder`` (maps + watershed, embedding cached) and ``decoder+prompts``.

Writes benchmarks/results/instance_<set>.json and instance_timing_<device>.json and prints a
table. Every figure is stored with the load average at the time (os.getloadavg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SETS = {"fluo": ("dsb2018_fluo_dev", 10), "he": ("dsb2018_histo_he", 6)}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def evaluate(session, val, decoder, mode, thresholds=None) -> dict:
    from sam_core.instance import score_labels

    gts, preds, scores = [], [], []
    start = time.perf_counter()
    for sample in val:
        labels, records = session.instance_segment(
            sample.image, mode=mode, decoder=decoder, thresholds=thresholds
        )
        gts.append(sample.label_image)
        preds.append(labels.astype(np.int64))
        scores.append(np.array([r["predicted_iou"] for r in records]))
    found = score_labels(gts, preds, scores)
    found["seconds"] = round(time.perf_counter() - start, 2)
    found["load_avg"] = _load()
    return found


def run_set(key: str, args) -> dict:
    from sam_core.evaluation.datasets import load_eval_set
    from sam_core.instance import (
        InstanceThresholds,
        TrainConfig,
        load_decoder,
        prepare_items,
        train_decoder,
    )
    from sam_core.session import Session
    from sam_core.training import split_samples

    name, n_val = SETS[key]
    samples = load_eval_set(args.data_root / name).samples
    train, val = split_samples(samples, n_val, 0)
    session = Session("vit_t", device=args.device, cache_dir=args.cache)
    start = time.perf_counter()
    items = prepare_items(session, [*train, *val], 1024)
    embed_s = time.perf_counter() - start
    names = {s.name for s in val}
    train_items = [i for i in items if i.name not in names]
    val_items = [i for i in items if i.name in names]
    out = args.runs / key
    result = {"set": name, "train": len(train_items), "val": len(val_items)}
    result["embed_seconds"] = {"value": round(embed_s, 1), "load_avg": _load()}
    if args.skip_train:
        decoder = load_decoder(out / "instance_decoder.pth", session.predictor.device)
        result["training"] = decoder.info
    else:
        config = TrainConfig(epochs=args.epochs, device=args.device)
        start = time.perf_counter()
        trained = train_decoder(session, train_items, val_items, out, config, resume=False)
        _sync(args.device)
        result["training"] = {
            "seconds": round(time.perf_counter() - start, 1),
            "epochs": args.epochs,
            "load_avg": _load(),
            "peak_rss_mb": _peak_mb(),
            "history": trained.history,
        }
        if args.device.startswith("cuda"):
            result["training"]["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        decoder = trained.decoder
    result["thresholds_tuned"] = decoder.thresholds.to_dict()
    result["decoder_default_thresholds"] = evaluate(
        session, val, decoder, "decoder", InstanceThresholds()
    )
    result["decoder"] = evaluate(session, val, decoder, "decoder")
    if not args.no_prompts:
        result["decoder+prompts"] = evaluate(session, val, decoder, "decoder+prompts")
    return result


def run_timing(args, decoder_path: Path) -> dict:
    from sam_core.evaluation.datasets import load_eval_set
    from sam_core.instance import MAPS_CACHE, load_decoder
    from sam_core.session import MEMORY_CACHE, Session

    samples = load_eval_set(args.data_root / SETS["fluo"][0]).samples
    largest = max(samples, key=lambda s: s.shape[0] * s.shape[1])
    image = np.ascontiguousarray(largest.image[:1024, :1024])
    session = Session("vit_t", device=args.device)
    decoder = load_decoder(decoder_path, session.predictor.device)
    predictor = session.predictor
    predictor.compute_embedding(image)  # warm-up
    times: dict[str, list[float]] = {"encoder": [], "decoder": [], "decoder+prompts": []}
    counts = {}
    for _ in range(args.repeats):
        _sync(args.device)
        start = time.perf_counter()
        predictor.compute_embedding(image)
        _sync(args.device)
        times["encoder"].append(time.perf_counter() - start)
        session.embed(image)  # cached: the modes below time decoder work only
        for mode in ("decoder", "decoder+prompts"):
            MAPS_CACHE.clear()
            start = time.perf_counter()
            _, records = session.instance_segment(image, mode=mode, decoder=decoder)
            _sync(args.device)
            times[mode].append(time.perf_counter() - start)
            counts[mode] = len(records)
    MEMORY_CACHE.clear()
    median = {k: round(float(np.median(v)), 3) for k, v in times.items()}
    return {
        "image": f"{largest.name}[:1024, :1024]",
        "device": str(predictor.device),
        "seconds_median": median,
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "decoder_over_encoder": round(median["decoder"] / median["encoder"], 2),
        "objects": counts,
        "peak_rss_mb": _peak_mb(),
        "load_avg": _load(),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--sets", default="fluo,he", help='comma list of fluo, he ("": timing only)'
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=None, help="zarr embedding cache folder")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/samscope_bench_instance"))
    parser.add_argument("--skip-train", action="store_true", help="use decoders in --runs")
    parser.add_argument("--no-prompts", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": args.device,
    }
    rows = []
    for key in filter(None, args.sets.split(",")):
        result = run_set(key, args)
        result["environment"] = env
        (args.out / f"instance_{key}.json").write_text(json.dumps(result, indent=2) + "\n")
        for mode in ("decoder_default_thresholds", "decoder", "decoder+prompts"):
            if mode in result:
                r = result[mode]
                rows.append(
                    (key, mode, r["AP50"], r["AP"], r["mSA"], r["objects_pred"], r["objects_gt"])
                )
        training = result["training"]
        print(
            f"{key}: training {training.get('seconds', '?')} s, embeddings "
            f"{result['embed_seconds']['value']} s, load {_load()}",
            flush=True,
        )
    print(f"{'set':5} {'mode':28} {'AP50':>6} {'AP':>6} {'mSA':>6} {'pred':>5} {'gt':>5}")
    for key, mode, ap50, ap, msa, n_pred, n_gt in rows:
        print(f"{key:5} {mode:28} {ap50:6.3f} {ap:6.3f} {msa:6.3f} {n_pred:5d} {n_gt:5d}")
    if not args.no_timing:
        timing = run_timing(args, args.runs / "fluo" / "instance_decoder.pth")
        timing["environment"] = env
        device = args.device.replace(":", "")
        (args.out / f"instance_timing_{device}.json").write_text(
            json.dumps(timing, indent=2) + "\n"
        )
        print(
            json.dumps(timing["seconds_median"]),
            "decoder/encoder",
            timing["decoder_over_encoder"],
            "load",
            timing["load_avg"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
