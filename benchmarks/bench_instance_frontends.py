"""What the front ends' decoder modes cost (issue 15, part B): a Run vs a threshold change.

    .venv/bin/python benchmarks/bench_instance_frontends.py [--run DIR] [--images N]

A Run in napari's Automatic segmentation widget (and every FiftyOne sample) is one
`Session.instance_segment` call: encoder (unless the embedding is cached) + instance decoder +
watershed. Moving a decoder threshold re-runs the same call; core finds the decoder's maps in
`MAPS_CACHE`, so only the watershed (decoder) or the watershed + SAM's mask decoder
(decoder+prompts) runs. This script times both on N 256 x 256 nuclei images of
``dsb2018_fluo_dev`` (shared/data, else tests/data) and prints a table; JSON goes to
benchmarks/results/instance_frontends-<date>.json with the load average. Per image the
``decoder`` run includes the encoder (first sight of the image); the ``decoder+prompts`` run
after it reuses the embedding (as a second Run in napari does) but recomputes the maps.

--run: a folder with model.pth + model.json listing an instance decoder (``samscope
train-instance`` output). Without it a tiny decoder is trained first (tests/instance_helpers,
about 15 s of CPU) -- its speed is the real decoder's (same network), its accuracy is not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="train-instance output folder")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np
    import torch
    from instance_helpers import tiny_decoder_run

    from sam_core.evaluation.datasets import load_eval_set
    from sam_core.instance import MAPS_CACHE, InstanceThresholds, load_decoder
    from sam_core.session import Session

    shared = REPO.parent / "shared" / "data" / "dsb2018_fluo_dev"
    data = shared if shared.is_dir() else REPO / "tests" / "data" / "dsb2018_fluo_dev"
    run = args.run or tiny_decoder_run(Path(tempfile.gettempdir()) / "samscope-bench-tiny", data)
    samples = [s for s in load_eval_set(data).samples if s.shape == (256, 256)]
    samples = samples[-args.images :]
    session = Session(str(run / "model.pth"))
    decoder = load_decoder(Path(run) / "instance_decoder.pth")
    moved = InstanceThresholds(**{**decoder.thresholds.to_dict(), "min_area": 40})
    rows = []
    for sample in samples:
        for mode in ("decoder", "decoder+prompts"):
            MAPS_CACHE.clear()  # the decoder runs again; the embedding stays in memory
            t0 = time.perf_counter()
            labels, _ = session.instance_segment(sample.image, mode=mode)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            again, _ = session.instance_segment(sample.image, mode=mode, thresholds=moved)
            rethreshold = time.perf_counter() - t0
            rows.append(
                {
                    "image": sample.name,
                    "mode": mode,
                    "run_s": round(first, 3),
                    "rethreshold_s": round(rethreshold, 3),
                    "objects": int(labels.max()),
                    "objects_after": int(again.max()),
                }
            )
            print(
                f"{sample.name}  {mode:16s} run {first:6.2f} s  threshold change "
                f"{rethreshold:6.3f} s  objects {labels.max():3d} -> {again.max():3d}"
            )
    load = os.getloadavg()
    summary = {
        mode: {
            "run_s_median": float(np.median([r["run_s"] for r in rows if r["mode"] == mode])),
            "rethreshold_s_median": float(
                np.median([r["rethreshold_s"] for r in rows if r["mode"] == mode])
            ),
        }
        for mode in ("decoder", "decoder+prompts")
    }
    print(f"\n{'mode':16s} {'run (median)':>14s} {'threshold change':>18s}")
    for mode, s in summary.items():
        print(f"{mode:16s} {s['run_s_median']:12.2f} s {s['rethreshold_s_median']:16.3f} s")
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch threads "
        f"{torch.get_num_threads()}"
    )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"instance_frontends-{datetime.now():%Y-%m-%d-%H%M}.json"
    blob = {
        "what": "Session.instance_segment: a Run vs a threshold change (maps cached)",
        "decoder_run": str(run),
        "images": len(samples),
        "rows": rows,
        "summary": summary,
        "load_avg": [round(v, 2) for v in load],
        "torch_threads": torch.get_num_threads(),
    }
    path.write_text(json.dumps(blob, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
