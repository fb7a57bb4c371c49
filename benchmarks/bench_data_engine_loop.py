"""What one turn of the data engine's loop costs (issue 17, part C), stage by stage.

    .venv/bin/python benchmarks/bench_data_engine_loop.py     # ~2 min on a quiet 2-core box

Runs the end-to-end loop test (tests/fiftyone_plugin/test_data_engine_loop_gui.py: real napari
viewer under Xvfb, real FiftyOne database, MobileSAM on CPU, two 256x256 nuclei images) in a
subprocess, the way CI runs it, and reads the seconds of each hand-off the test records:
napari annotation (4 clicks) -> replay -> `samscope finetune` (1 epoch, decoder) -> FiftyOne
automatic masks (8 x 8 grid) with the new model -> ratings through the `rate_mask` operator ->
`samscope export-reviewed` -> the series annotator on `to_correct/` -> retrain.

Prints a markdown table and writes benchmarks/results/data_engine_loop-<date>.json with the
load average before and after (figures on a loaded machine are not comparable) and the
wall time of the whole pytest run (start-up, fixtures and the database included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = (
    "tests/fiftyone_plugin/test_data_engine_loop_gui.py"
    "::test_annotate_train_segment_review_export_correct_retrain"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        env = {**os.environ, "SAMSCOPE_LOOP_TIMINGS": str(timings)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
        started = time.perf_counter()
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if run.returncode != 0 or not timings.is_file():
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
            print(f"the loop test failed (exit {run.returncode})", file=sys.stderr)
            return 1
        result = json.loads(timings.read_text())
    load_after = os.getloadavg()
    rows = [*result["stages"].items(), ("loop total (test body)", result["total_s"])]
    rows.append(("pytest wall (start-up + fixtures + test)", round(wall, 1)))
    print("| stage | seconds |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"\nload average before {load_before}, after {load_after}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")
    path = args.out / f"data_engine_loop-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "test": TEST,
                "stages_s": result["stages"],
                "loop_total_s": result["total_s"],
                "pytest_wall_s": round(wall, 1),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "cpus": os.cpu_count(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
