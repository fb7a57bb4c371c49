"""Benchmark of automatic mask generation: time, masks/s, peak RSS, re-threshold pass, tiling.

    .venv/bin/python benchmarks/bench_amg.py                 # all cases (~15 min on 2 quiet cores)
    .venv/bin/python benchmarks/bench_amg.py --quick         # ref16 only, ours + official (< 3 min)
    .venv/bin/python benchmarks/bench_amg.py --cases ref16 ref32   # a subset (see CASES)
    .venv/bin/python benchmarks/bench_amg.py --mosaic-side 4096 --mosaic-points 8

Each case runs in a fresh subprocess (this script re-invoked with `--one CASE`), so its peak RSS
is its own. Cases:
- ref16 / ref32: the two images of ../shared/reference/mobilesam_amg16.npz (a 640×480 COCO
  image and a 256² nuclei image) with a 16×16 and a 32×32 grid, other parameters default
  except max_mask_fraction=None (the official code has no such filter). In the same process,
  right after ours on each image, the official `SamAutomaticMaskGenerator` (MobileSAM, from
  the venv of ../shared/reference/official/setup.sh: $SAMSCOPE_OFFICIAL_VENV, default
  /work/official_venv; `--no-official` skips it) runs on the same image: the table gives both
  times, their ratio, and the fraction of each side's masks matched by the other's at
  IoU >= 0.9. Only ratios measured in one run mean anything; the 1-min load average is kept.
- mosaic: an N×N (default 8192²) uint8 mosaic of the 256² nuclei images of dsb2018_fluo_dev,
  tiled (1024² tiles, 256 px halo) with points_per_side per tile, cold (embeddings computed
  and written to a zarr EmbeddingCache) and warm (embeddings read back from it).
Results: benchmarks/results/amg-<date-time>.json, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(os.environ.get("SAMSCOPE_DATA", SHARED / "data"))
REFERENCE = Path(os.environ.get("SAMSCOPE_REFERENCE", SHARED / "reference"))
RESULTS = Path(__file__).resolve().parent / "results"
OFFICIAL_VENV = os.environ.get("SAMSCOPE_OFFICIAL_VENV", "/work/official_venv")
RESULT_MARK = "@@RESULT "
CASES = ("ref16", "ref32", "mosaic")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _official_generator(points_per_side: int):
    """The official `SamAutomaticMaskGenerator` (MobileSAM), imported from the official venv
    into this process (our torch, their packages); None if that venv is not there."""
    site = sorted(Path(OFFICIAL_VENV).glob("lib/python3*/site-packages"))
    if not site:
        return None
    sys.path.append(str(site[0]))
    from mobile_sam import SamAutomaticMaskGenerator, sam_model_registry

    from sam_core.checkpoints import fetch_checkpoint

    model = sam_model_registry["vit_t"](checkpoint=str(fetch_checkpoint("vit_t"))).eval()
    return SamAutomaticMaskGenerator(model, points_per_side=points_per_side)


def _matched_fraction(masks_a: list[np.ndarray], masks_b: list[np.ndarray]) -> float:
    """Fraction of masks_a whose best IoU against any of masks_b is >= 0.9."""
    if not masks_a:
        return 1.0
    if not masks_b:
        return 0.0
    a = np.stack([m.reshape(-1) for m in masks_a]).astype(np.float32)
    b = np.stack([m.reshape(-1) for m in masks_b]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1.0)
    return float(np.mean(iou.max(axis=1) >= 0.9))


def run_reference_case(points_per_side: int, with_official: bool = True) -> list[dict]:
    """Ours and (in the same process, alternating per image) the official generator."""
    import torch

    from sam_core import AutomaticMaskGenerator, load_model

    reference = np.load(REFERENCE / "mobilesam_amg16.npz")
    model = load_model("vit_t", device="cpu")
    # No near-whole-image filter, so both generators keep the same kind of masks.
    amg = AutomaticMaskGenerator(model, points_per_side=points_per_side, max_mask_fraction=None)
    official = _official_generator(points_per_side) if with_official else None
    rows = []
    for name in reference["images"]:
        image = _read_rgb(DATA / str(name))
        load_before = round(os.getloadavg()[0], 2)
        start = time.perf_counter()
        candidates = amg.compute_candidates(image)
        expensive = time.perf_counter() - start
        start = time.perf_counter()
        records = amg.select(candidates)
        select = time.perf_counter() - start
        start = time.perf_counter()
        amg.select(candidates, pred_iou_thresh=0.8, stability_score_thresh=0.9)
        reselect = time.perf_counter() - start
        total = expensive + select
        row = {
            "case": f"ref{points_per_side}",
            "image": str(name),
            "image_hw": list(image.shape[:2]),
            "points_per_side": points_per_side,
            "seconds": round(total, 2),
            "expensive_pass_s": round(expensive, 2),
            "select_pass_s": round(select, 3),
            "reselect_pass_s": round(reselect, 3),
            "candidates": len(candidates),
            "masks": len(records),
            "masks_per_s": round(len(records) / total, 2),
            "load_avg_1min": load_before,
        }
        if official is not None:
            with torch.inference_mode():
                start = time.perf_counter()
                theirs = official.generate(image)
                official_s = time.perf_counter() - start
            ours_masks = [r["segmentation"] for r in records]
            their_masks = [r["segmentation"] for r in theirs]
            row |= {
                "official_s_same_run": round(official_s, 2),
                "official_masks": len(theirs),
                "speedup_vs_official": round(official_s / total, 2),
                "ours_matched_in_official": round(_matched_fraction(ours_masks, their_masks), 3),
                "official_matched_in_ours": round(_matched_fraction(their_masks, ours_masks), 3),
                "load_avg_1min_after": round(os.getloadavg()[0], 2),
            }
        rows.append(row)
    return rows


def _mosaic(side: int) -> np.ndarray:
    tiles = sorted((DATA / "dsb2018_fluo_dev" / "images").glob("*.png"))
    small = []
    for path in tiles:
        image = _read_rgb(path)
        if image.shape[:2] == (256, 256):
            small.append(image[..., 0])
    mosaic = np.zeros((side, side), dtype=np.uint8)
    k = 0
    for y in range(0, side, 256):
        for x in range(0, side, 256):
            mosaic[y : y + 256, x : x + 256] = small[k % len(small)][: side - y, : side - x]
            k += 1
    return mosaic


def run_mosaic_case(side: int, points_per_side: int, warm_store: str, phase: str) -> list[dict]:
    from sam_core import AutomaticMaskGenerator, Predictor, load_model
    from sam_core.embedding_cache import EmbeddingCache

    image = _mosaic(side)
    predictor = Predictor(load_model("vit_t", device="cpu"))
    amg = AutomaticMaskGenerator(
        predictor,
        points_per_side=points_per_side,
        output_mode="cropped_mask",
        tile_shape=(1024, 1024),
    )
    layout = amg.tile_layout(image.shape)
    cache = EmbeddingCache(warm_store, predictor, tile_shape=layout.tile_shape, halo=layout.halo)
    start = time.perf_counter()
    embedding = cache.embedding(image)  # cold: computed and written; warm: read back
    embed_s = time.perf_counter() - start
    candidates = amg.compute_candidates(image, embedding=embedding)
    records = amg.select(candidates)
    total = time.perf_counter() - start
    return [
        {
            "case": f"mosaic-{phase}",
            "image_hw": [side, side],
            "tiles": len(layout),
            "points_per_side_per_tile": points_per_side,
            "seconds": round(total, 1),
            "embedding_s": round(embed_s, 1),
            "candidates": len(candidates),
            "candidate_mask_mib": round(candidates.nbytes / 2**20, 1),
            "masks": len(records),
            "masks_per_s": round(len(records) / total, 2),
            "peak_rss_mib": round(_peak_rss_mib()),
        }
    ]


def _run_one(args: argparse.Namespace) -> None:
    if args.one in ("ref16", "ref32"):
        rows = run_reference_case(int(args.one[3:]), with_official=not args.no_official)
    else:
        phase = args.one.split("-", 1)[1]
        rows = run_mosaic_case(args.mosaic_side, args.mosaic_points, args.store, phase)
    print(RESULT_MARK + json.dumps(rows), flush=True)


def _subprocess(case: str, args: argparse.Namespace, store: str) -> list[dict]:
    command = [sys.executable, __file__, "--one", case, "--store", store]
    command += ["--mosaic-side", str(args.mosaic_side), "--mosaic-points", str(args.mosaic_points)]
    if args.no_official:
        command.append("--no-official")
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise RuntimeError(f"case {case} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def _table(rows: list[dict]) -> str:
    keys = [
        "case",
        "image",
        "image_hw",
        "seconds",
        "select_pass_s",
        "reselect_pass_s",
        "masks",
        "masks_per_s",
        "official_s_same_run",
        "speedup_vs_official",
        "ours_matched_in_official",
        "official_matched_in_ours",
        "load_avg_1min",
        "peak_rss_mib",
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--mosaic-side", type=int, default=8192)
    parser.add_argument("--mosaic-points", type=int, default=8, help="points per side per tile")
    parser.add_argument(
        "--quick", action="store_true", help="only ref16 (ours and official, < 3 min)"
    )
    parser.add_argument("--no-official", action="store_true", help="skip the official generator")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _run_one(args)
        return
    if args.quick:
        args.cases = ["ref16"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-amg-") as tmp:
        store = str(Path(tmp) / "mosaic.zarr")
        for case in args.cases:
            subcases = ["mosaic-cold", "mosaic-warm"] if case == "mosaic" else [case]
            for sub in subcases:
                rows += _subprocess(sub, args, store)
                print(_table(rows[-2:] if sub.startswith("ref") else rows[-1:]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    path = RESULTS / f"amg-{stamp}.json"
    meta = {"cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "quick": args.quick}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(_table(rows))
    print(f"written {path}")


if __name__ == "__main__":
    main()
