"""Quiet `predict` latency with samscope's short OpenMP spin-waits against libgomp's default.

    .venv/bin/python benchmarks/bench_openmp_waits.py             # 6 rounds, ~4 min on 2 cores
    .venv/bin/python benchmarks/bench_openmp_waits.py --rounds 3

OpenMP reads its wait settings once, when torch loads, so the two settings cannot be
interleaved call by call in one process (as `bench_latency.py` does for implementations).
Instead each round starts one fresh process per setting, alternating: samscope's setting
(`sam_core.openmp_waits`: GOMP_SPINCOUNT=1000) and libgomp's own default (GOMP_SPINCOUNT=300000,
set before import, which sam_core keeps as the user's). Each process measures MobileSAM
`predict` (one point at the centre → 3 masks at image size; 3 warm-ups, then the median of
`--calls`) on the 512² EM slice and the 1040×1388 nuclei image of `bench_latency.py`. The
summary is the median over rounds of those medians, per setting and image. The contended
figures are `bench_latency.py`'s (with `--gomp-spincount 300000` for libgomp's default).

Results: benchmarks/results/openmp_waits-<date-time>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
from bench_latency import DATA, IMAGES, RESULTS, _prompt, _read_rgb  # the same images

SETTINGS = {"samscope (GOMP_SPINCOUNT=1000)": None, "libgomp default (300000)": "300000"}
_WAIT_KEYS = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")


def measure(calls: int) -> dict[str, float]:
    """In this process: median ms of `predict` per image."""
    import time

    import sam_core
    from sam_core import Predictor, load_model

    predictor = Predictor(load_model("vit_t"), device="cpu")
    out: dict[str, float] = {"openmp_waits": sam_core.openmp_waits.state()}
    for name, rel in IMAGES.items():
        rgb = _read_rgb(DATA / rel)
        predictor.set_image(rgb)
        point = [_prompt(rgb)[0]]
        for _ in range(3):
            predictor.predict(points=point, labels=[1])
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            predictor.predict(points=point, labels=[1])
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times) * 1000.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument(
        "--candidate",
        default=None,
        help="compare this GOMP_SPINCOUNT with libgomp's default instead of samscope's setting",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.calls)))
        return
    settings = dict(SETTINGS)
    if args.candidate is not None:
        del settings["samscope (GOMP_SPINCOUNT=1000)"]
        settings = {f"GOMP_SPINCOUNT={args.candidate}": str(args.candidate), **settings}

    runs: dict[str, list[dict]] = {name: [] for name in settings}
    loads = []
    for round_index in range(args.rounds):
        for name, spincount in settings.items():
            env = {k: v for k, v in os.environ.items() if k not in _WAIT_KEYS}
            if spincount is not None:
                env["GOMP_SPINCOUNT"] = spincount
            loads.append(os.getloadavg()[0])
            out = subprocess.run(
                [sys.executable, __file__, "--one", "--calls", str(args.calls)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    summary = {
        name: {
            image: {
                "median_of_medians_ms": round(float(np.median([r[image] for r in rs])), 1),
                "mean_ms": round(float(np.mean([r[image] for r in rs])), 1),
                "min_ms": round(float(np.min([r[image] for r in rs])), 1),
                "max_ms": round(float(np.max([r[image] for r in rs])), 1),
            }
            for image in IMAGES
        }
        for name, rs in runs.items()
    }
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "rounds": args.rounds,
        "calls": args.calls,
        "load_avg_before_each_process": loads,
        "runs": runs,
        "summary": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = RESULTS / f"openmp_waits-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    base = summary["libgomp default (300000)"]
    print("| setting | image | median of medians ms | mean | min–max | vs default |")
    print("|---|---|---|---|---|---|")
    for name, per_image in summary.items():
        for image, s in per_image.items():
            ratio = s["median_of_medians_ms"] / base[image]["median_of_medians_ms"]
            print(
                f"| {name} | {image} | {s['median_of_medians_ms']} | {s['mean_ms']} | "
                f"{s['min_ms']}–{s['max_ms']} | {ratio:.3f}× |"
            )
    print(f"load average before each process: {min(loads):.2f}–{max(loads):.2f}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
