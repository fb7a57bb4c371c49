"""What provenance costs, and what replay costs (issue 17).

    .venv/bin/python benchmarks/bench_provenance.py            # ~1-2 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_provenance.py --repeats 3

On one real 256² nuclei image (tests/data or shared/data dsb2018_fluo_dev) with MobileSAM on
the CPU, fp32, the embedding computed once beforehand:

* prompted mask: `Session.predict_best` alone vs `predict_best_recorded` (mask + record);
* automatic masks (16x16 grid): `Session.generate` alone, then `automatic_provenance` for all
  its masks, then replaying every mask (`sam_core.replay`, the generator runs once per image);
* refine: `refine_instances` on the image's ground-truth objects (per object), and replaying
  one refined record;
* sidecar: writing and reading the automatic run's records as one JSON file.

Medians of --repeats runs, in milliseconds; every replay is checked bit-identical. The
1-minute load average is recorded (the machine may be shared). Writes
benchmarks/results/provenance-<date-time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
STEM = "0b2e702f90aee4ff"


def _nuclei() -> Path:
    shared = ROOT.parent / "shared" / "data" / "dsb2018_fluo_dev"
    return shared if shared.is_dir() else ROOT / "tests" / "data" / "dsb2018_fluo_dev"


def _ms(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", type=int, default=16)
    args = parser.parse_args()

    import tifffile

    from sam_core.provenance import (
        automatic_provenance,
        generator_settings,
        predict_best_recorded,
        read_sidecar,
        write_sidecar,
    )
    from sam_core.refine import refine_instances
    from sam_core.replay import replay_detailed
    from sam_core.session import Session

    folder = _nuclei()
    path = folder / "images" / f"{STEM}.png"
    labels = tifffile.imread(folder / "labels" / f"{STEM}.tif")
    session = Session("vit_t")
    image = session.load(path)
    load = os.getloadavg()[0]
    embed_ms, embedding = _ms(lambda: session.embed(image), 1)
    ys, xs = np.nonzero(labels == 1)
    point = [[float(xs.mean()), float(ys.mean())]]
    rows = []

    plain, _ = _ms(lambda: session.predict_best(embedding, point, [1]), args.repeats)
    recorded, (_mask, _, record) = _ms(
        lambda: predict_best_recorded(session, image, embedding, point, [1]), args.repeats
    )
    replay_ms, result = _ms(lambda: replay_detailed(record, image, session=session), 1)
    assert result.identical, "prompted replay differs"
    rows += [
        ("prompted: predict_best", plain, 1),
        ("prompted: predict_best_recorded", recorded, 1),
        ("prompted: replay", replay_ms, 1),
    ]

    generator = session.automatic_generator(points_per_side=args.grid)
    generate_ms, records = _ms(lambda: session.generate(image, generator=generator), 1)
    settings = generator_settings(generator)
    provenance_ms, auto_records = _ms(
        lambda: automatic_provenance(session, image, records, settings=settings), args.repeats
    )
    start = time.perf_counter()
    replays = [replay_detailed(r, image, session=session) for r in auto_records]
    replay_all_ms = (time.perf_counter() - start) * 1e3
    assert all(r.identical for r in replays), "automatic replay differs"
    n = len(records)
    rows += [
        (f"automatic {args.grid}x{args.grid}: generate", generate_ms, n),
        ("automatic: provenance of all masks", provenance_ms, n),
        ("automatic: replay all masks", replay_all_ms, n),
    ]

    with tempfile.TemporaryDirectory() as tmp:
        side = Path(tmp) / "x.provenance.json"
        write_ms, _ = _ms(lambda: write_sidecar(side, auto_records), args.repeats)
        read_ms, back = _ms(lambda: read_sidecar(side), args.repeats)
        assert back == auto_records
        size = side.stat().st_size
    rows += [("sidecar: write", write_ms, n), ("sidecar: read", read_ms, n)]

    objects = int(labels.max())
    refine_ms, refined = _ms(lambda: refine_instances(session, image, labels), 1)
    replay_refined_ms, rr = _ms(
        lambda: replay_detailed(refined.records[0], image, session=session), 1
    )
    assert rr.identical, "refined replay differs"
    rows += [
        ("refine: all objects", refine_ms, objects),
        ("refine: replay one", replay_refined_ms, 1),
    ]

    print(f"\nprovenance / replay, {STEM} 256x256, vit_t cpu fp32; load avg {load:.2f}")
    print(f"embed (once): {embed_ms:.0f} ms; sidecar of {n} records: {size} bytes\n")
    print(f"| {'step':40s} | {'ms':>9s} | {'masks':>5s} | {'ms/mask':>8s} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 7}|{'-' * 10}|")
    for name, ms, count in rows:
        print(f"| {name:40s} | {ms:9.1f} | {count:5d} | {ms / max(count, 1):8.2f} |")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = RESULTS / f"provenance-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "image": STEM,
                "load_avg_1min": load,
                "repeats": args.repeats,
                "embed_ms": embed_ms,
                "sidecar_bytes": size,
                "rows": [{"step": s, "ms": m, "masks": c} for s, m, c in rows],
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
