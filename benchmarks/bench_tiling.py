"""Benchmark of tiled embeddings with the zarr cache on a large mosaic: time and peak RSS.

    .venv/bin/python benchmarks/bench_tiling.py                 # 8192² mosaic, 64 tiles
    .venv/bin/python benchmarks/bench_tiling.py --size 3072     # smaller (9 tiles), for busy boxes

The mosaic repeats the dsb2018 fluorescence nuclei images (gray uint8, each cut to 256²) over
an N x N canvas. Two phases, each in a fresh subprocess so its peak RSS (`ru_maxrss`) is its own:

* cold: `EmbeddingCache(path, predictor).embedding(mosaic)`: every tile (1024² inner, 256 px
  halo) embedded by MobileSAM and written to the zarr store;
* warm: the same call again in a new process: every tile read back and checked.

Also reported: one `TiledPredictor.predict` click after the warm read. Results are printed as
JSON and written to benchmarks/results/tiling-<host>-<date-time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAMSCOPE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
RESULT_MARK = "@@RESULT "


def mosaic(size: int) -> np.ndarray:
    """(size, size) uint8: the nuclei images, 256² pieces, repeated row by row."""
    from sam_core.image_io import read_image

    pieces = []
    for path in sorted((DATA / "dsb2018_fluo_dev" / "images").glob("*.png")):
        image = read_image(path)
        if image.ndim == 3:
            image = image[..., :3].mean(axis=-1).astype(np.uint8)
        if min(image.shape) >= 256:
            pieces.append(image[:256, :256])
    canvas = np.empty((size, size), np.uint8)
    k = 0
    for y in range(0, size, 256):
        for x in range(0, size, 256):
            piece = pieces[k % len(pieces)]
            k += 1
            canvas[y : y + 256, x : x + 256] = piece[: size - y, : size - x]
    return canvas


def one_phase(size: int, cache: Path) -> dict:
    from sam_core import Predictor, load_model
    from sam_core.embedding_cache import EmbeddingCache
    from sam_core.tiling import TiledPredictor

    image = mosaic(size)
    predictor = Predictor(load_model("vit_t"), device="cpu")
    store = EmbeddingCache(cache, predictor)
    tiles = [0]

    def progress(done: int, total: int) -> None:
        tiles[0] = total

    start = time.perf_counter()
    cpu = time.process_time()
    embedding = store.embedding(image, progress)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    start = time.perf_counter()
    TiledPredictor(predictor, embedding).predict(points=[[size / 2, size / 2]], labels=[1])
    click = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "tiles": tiles[0],
        "seconds_per_tile": round(seconds / max(1, tiles[0]), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "click_predict_seconds": round(click, 3),
        "repairs": store.repairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="mosaic side in pixels (8192)")
    parser.add_argument("--cache", type=Path, help="store path (default: a temporary folder)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--no-save", action="store_true", help="don't write results/*.json")
    args = parser.parse_args()
    if args.phase:
        print(RESULT_MARK + json.dumps(one_phase(args.size, args.cache)), flush=True)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-tiling-"))
    cache = args.cache or workdir / "mosaic.zarr"
    phases = {}
    for phase in ("cold", "warm"):
        command = [sys.executable, __file__, "--size", str(args.size), "--cache", str(cache)]
        done = subprocess.run([*command, "--phase", phase], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{phase} phase failed:\n{done.stderr}")
        line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
        phases[phase] = json.loads(line[len(RESULT_MARK) :])
    store_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    result = {
        "benchmark": "tiled embedding + zarr cache, MobileSAM (vit_t), CPU fp32",
        "mosaic": f"{args.size}x{args.size} uint8",
        "store_mib": round(store_bytes / 2**20, 1),
        "phases": phases,
        "machine": {
            "host": socket.gethostname(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M")
        path = RESULTS / f"tiling-{args.size}-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
