"""What the napari side of the data engine costs (issue 17, part B), without a viewer.

    .venv/bin/python benchmarks/bench_data_engine_napari.py    # ~1-2 min, quiet 2-core box

Measured on real nuclei (dsb2018_fluo_dev, 256x256) with MobileSAM (vit_t, CPU, fp32):

* next image, cold: `Session.embed` of an image not seen yet (what "Next" costs without the
  series widget's read-ahead) vs warm (the read-ahead put it in the memory cache);
* one click: `Session.predict` (multimask) and the provenance record the annotator adds to it
  (`prompted_provenance`: plane digest, model, prompts);
* pre-fill: `Session.generate` with the widget's default grid (16 per side) and with 8, plus
  the records (`automatic_provenance`);
* refine: `refine_instances` on the image's ground-truth objects (box + mask prompts each);
* save: `Series.save` of one image (label TIFF + sidecar + image copy + progress file).

Prints a markdown table and writes benchmarks/results/data_engine_napari-<date>.json with the
load average before and after (figures on a loaded machine are not comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("c043d5ac9dd46605", "00071198d059ba7f", "003cee89357d9fe1")


def _data_dir() -> Path:
    shared = Path(os.environ.get("SAMSCOPE_DATA", ROOT.parent / "shared" / "data"))
    full = shared / "dsb2018_fluo_dev"
    return full if full.is_dir() else ROOT / "tests" / "data" / "dsb2018_fluo_dev"


def _timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    import tifffile
    from PIL import Image

    from sam_core.provenance import automatic_provenance, prompted_provenance
    from sam_core.refine import refine_instances
    from sam_core.series import Series
    from sam_core.session import Session

    folder = _data_dir()
    images = [np.asarray(Image.open(folder / "images" / f"{n}.png")) for n in NAMES]
    gt = tifffile.imread(folder / "labels" / f"{NAMES[0]}.tif")
    load_before = os.getloadavg()
    session = Session("vit_t", device="cpu")
    rows: list[tuple[str, float, str]] = []
    session.embed(images[2])  # loads the model: not timed

    cold, _ = _timed(lambda: session.embed(images[0]))
    rows.append(("next image, no read-ahead: embed (cold)", cold, "s"))
    warm, embedding = _timed(lambda: session.embed(images[0]), repeat=5)
    rows.append(("next image after read-ahead: embed (memory hit)", warm * 1000, "ms"))
    ys, xs = np.nonzero(gt == np.bincount(gt.ravel())[1:].argmax() + 1)
    point = [[float(xs.mean()), float(ys.mean())]]
    predict, (masks, _scores, _) = _timed(
        lambda: session.predict(embedding, points=point, labels=[1]), repeat=5
    )
    rows.append(("one click: predict (3 masks)", predict * 1000, "ms"))
    image0 = session.load(images[0])
    record_s, record = _timed(
        lambda: prompted_provenance(
            session, image0, z=None, points_xy=point, point_labels=[1], box_xyxy=None,
            mask_input=None, multimask_output=True, mask_index=0, mask=masks[0],
        ),
        repeat=5,
    )  # fmt: skip
    rows.append(("one click: provenance record", record_s * 1000, "ms"))
    for grid in (16, 8):
        generator = session.automatic_generator(points_per_side=grid, pred_iou_thresh=0.92)
        seconds, records = _timed(lambda g=generator: session.generate(image0, None, generator=g))
        rows.append((f"pre-fill grid {grid}: {len(records)} masks", seconds, "s"))
    settings = {"points_per_side": 8, "pred_iou_thresh": 0.92}
    prov_s, _ = _timed(
        lambda: automatic_provenance(session, image0, records, settings=settings, mode="grid")
    )
    rows.append((f"pre-fill records ({len(records)})", prov_s * 1000, "ms"))
    refine_s, result = _timed(lambda: refine_instances(session, image0, gt))
    rows.append((f"refine {len(result.masks)} objects (box + mask)", refine_s, "s"))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in" / "images"
        src.mkdir(parents=True)
        Image.fromarray(images[0]).save(src / "a.png")
        series = Series(src.parent, Path(tmp) / "out")
        save_s, _ = _timed(lambda: series.save(0, result.label_image(), {1: record}), repeat=3)
    rows.append(("series: save one image (TIFF + sidecar + copy + progress)", save_s * 1000, "ms"))
    load_after = os.getloadavg()

    print("| step | time | unit |\n|---|---:|---|")
    for what, value, unit in rows:
        print(f"| {what} | {value:.3g} | {unit} |")
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"data_engine_napari-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "rows": [{"step": w, "value": round(v, 4), "unit": u} for w, v, u in rows],
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "cpu_count": os.cpu_count(),
                "torch_threads": __import__("torch").get_num_threads(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
