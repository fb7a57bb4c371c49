"""Samples per minute for the samscope automatic masks operator on the COCO development images,
run immediately and delegated (queued, then run by FiftyOne's delegated service in-process).

    .venv/bin/python benchmarks/bench_fiftyone.py                      # 12 images, 32x32 grid
    .venv/bin/python benchmarks/bench_fiftyone.py --n 4 --points 16    # reduced, for a busy box

It uses a private FiftyOne database under --workdir (default: a temp folder) and this repo's
plugin. It measures; it asserts nothing. Figures print as a markdown table and go to
benchmarks/results/fiftyone-<date>-<time>.json with the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup_env(workdir: Path) -> None:
    plugins = workdir / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "samscope-sam"
    if not link.exists():
        link.symlink_to(REPO / "fiftyone_plugin", target_is_directory=True)
    os.environ["FIFTYONE_DATABASE_DIR"] = str(workdir / "db")
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins)
    os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = str(workdir / "datasets")
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="COCO images (at most 12)")
    parser.add_argument("--points", type=int, default=32, help="points_per_side of the grid")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SAMSCOPE_DATA", REPO.parent / "shared" / "data")),
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="samscope-bench-fo-"))
    _setup_env(workdir)

    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    from sam_core import session as core_session

    images = sorted((args.data / "coco_val2017_multi" / "images").glob("*.jpg"))[: args.n]
    dataset = fo.Dataset("samscope-bench-fo", overwrite=True, persistent=True)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in images])
    core_session.get_predictor("vit_t", "cpu")  # model load is not part of the figure
    uri = "@samscope/sam/automatic_masks"
    rows = []
    for mode in ("immediate", "delegated"):
        field = f"auto_{mode}"
        params = {"label_field": field, "points_per_side": args.points}
        core_session.MEMORY_CACHE.clear()  # both modes pay for their image embeddings
        start = time.perf_counter()
        if mode == "immediate":
            result = foo.execute_operator(
                uri, dataset=dataset, params={**params, "delegate": False}
            ).result
        else:
            foo.execute_operator(
                uri, dataset=dataset, params={**params, "delegate": True}, request_delegation=True
            )
            service = DelegatedOperationService()
            queued = service.get_queued_operations(operator=uri, dataset_name=dataset.name)
            service.execute_queued_operations(operator=uri, dataset_name=dataset.name)
            doc = service.get(queued[-1].id)
            result = doc.result.result
            service.delete_operation(doc.id)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "mode": mode,
                "samples": result["processed"],
                "masks": result["masks"],
                "seconds": round(seconds, 1),
                "samples_per_minute": round(60 * result["processed"] / seconds, 2),
            }
        )
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "points_per_side": args.points,
        "n_images": len(images),
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "note": "the embedding cache is cleared before each mode; model load excluded; "
        "delegated time includes queueing and the in-process delegated service",
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"fiftyone-{stamp}.json").write_text(json.dumps(record, indent=1))
    load = os.getloadavg()[0]
    print(f"grid {args.points}x{args.points}, load average {load:.1f} (measured under load if > 2)")
    print("| mode | samples | masks | seconds | samples/min |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = (row[k] for k in ("mode", "samples", "masks", "seconds", "samples_per_minute"))
        print("| " + " | ".join(str(c) for c in cells) + " |")
    dataset.delete()
    sys.exit(0)


if __name__ == "__main__":
    main()
