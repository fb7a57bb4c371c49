"""napari click-to-preview latency of the samscope annotator, quiet and under CPU contention.

    .venv/bin/python benchmarks/bench_napari_latency.py            # 15 clicks per load level
    .venv/bin/python benchmarks/bench_napari_latency.py --quick    # 6 clicks (< 2 min)

A real napari viewer (on an Xvfb display that this script starts when $DISPLAY is unset)
with the annotator docked and the 1040x1388 nuclei image of ../shared/data (else a synthetic
image of that size). After one warm-up click (which computes the embedding), each measured
click is a real Qt mouse press + release on the canvas over a nucleus; the latency runs from
that click to the moment the preview layer's data is replaced by the new mask (its `data`
event). Between clicks the prompts are cleared (X). Each load level adds 0, 1 or 2 busy
processes (a pure-Python loop each) for the duration. Per level: median and p90 of

  click → preview layer updated   (what the user waits for)
  click → result in the GUI thread (worker done: embedding lookup, predict, record)
  result → layer updated          (napari side: mask drawing into the preview layer)
  predict in the worker           (Session.predict's share of the worker's time)
  predict alone                   (Session.predict with the same prompt, GUI idle)

Writes benchmarks/results/napari-latency-<date-time>.json; records the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dsb2018_fluo_dev"
IMAGE_NAME = "c901794d1a421d52"  # 1040x1388 fluorescence nuclei
RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("total", "worker", "gui", "predict_in_worker")
BUSY = "import time\nwhile True:\n    pass\n"


def _image_and_clicks(count: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(image (H, W) uint8, [(y, x) interior points of nuclei, largest first])."""
    from scipy import ndimage

    image_path, labels_path = DATA / "images" / f"{IMAGE_NAME}.png", DATA / "labels"
    if image_path.is_file():
        import tifffile
        from PIL import Image

        with Image.open(image_path) as im:
            image = np.asarray(im.convert("L"))
        labels = tifffile.imread(labels_path / f"{IMAGE_NAME}.tif")
    else:  # synthetic: bright discs on a dark background
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:1040, :1388]
        labels = np.zeros((1040, 1388), np.int32)
        for i, (cy, cx) in enumerate(rng.uniform((60, 60), (980, 1328), (20, 2)), 1):
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 30**2] = i
        image = np.where(labels > 0, 200, 20).astype(np.uint8)
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    clicks = []
    for obj in ids[np.argsort(-sizes)]:
        distance = ndimage.distance_transform_edt(np.pad(labels == obj, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
        clicks.append((float(y), float(x)))
    return image, [clicks[i % len(clicks)] for i in range(count)]


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "n": len(ms),
    }


class Bench:
    """The viewer, the annotator and the click / wait machinery."""

    def __init__(self, image: np.ndarray) -> None:
        import napari
        from qtpy.QtWidgets import QApplication

        self.viewer = napari.Viewer(show=True)
        self.app = QApplication.instance()  # napari made it
        self.viewer.window._qt_window.resize(1200, 800)
        _, self.widget = self.viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
        self.layer = self.viewer.add_image(image, name="nuclei")
        self.viewer.reset_view()
        self._pump(0.3)
        self.stamps: dict[str, float] = {}
        original = self.widget._on_preview

        def on_preview(result: object) -> None:
            self.stamps.setdefault("result", time.perf_counter())
            original(result)

        self.widget._on_preview = on_preview  # the job's callback is looked up per request
        # Time Session.predict inside the worker too: tells the model's share of the wait
        # from the rest (embedding lookup, provenance record, thread hand-offs, rendering).
        from sam_core.session import Session

        original_predict = Session.predict
        stamps = self

        def timed_predict(session, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original_predict(session, *args, **kwargs)
            finally:
                stamps.stamps["predict"] = time.perf_counter() - start

        Session.predict = timed_predict

    def _pump(self, seconds: float = 0.0) -> None:
        end = time.perf_counter() + seconds
        while True:
            self.app.processEvents()
            if time.perf_counter() >= end:
                return
            time.sleep(0.001)

    def _wait(self, condition, timeout: float = 300.0) -> None:
        end = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > end:
                raise TimeoutError("the annotator did not answer in time")
            self.app.processEvents()
            time.sleep(0.0005)

    def idle(self) -> bool:
        w = self.widget
        return w._preview_worker is None and not w._preview_pending

    def clear(self) -> None:
        handled = self.viewer.window._qt_viewer._key_map_handler.press_key("x")
        assert handled, "X is not bound"
        self._wait(self.idle)
        self._pump(0.05)

    def click(self, yx: tuple[float, float]) -> dict[str, float]:
        """One real canvas click on data pixel (y, x); returns its stamps in seconds."""
        from qtpy.QtCore import QEventLoop, QPoint, Qt, QTimer
        from qtpy.QtTest import QTest

        preview = self.widget.helper("SAM preview") if self._has_preview() else None
        canvas = self.viewer.window._qt_viewer.canvas
        to_canvas = canvas.view.transform * canvas.view.scene.transform
        world = self.layer.data_to_world(yx)
        x, y = to_canvas.map([float(world[-1]), float(world[-2])])[:2]
        self.stamps = {}
        updated: list[float] = []
        # Wait inside Qt's own event loop (idle until an event arrives), as napari does while
        # the user waits; a polling loop would compete with the worker for the GIL.
        loop = QEventLoop()

        def on_data(event: object = None) -> None:
            if self.widget.object_masks and not updated:
                updated.append(time.perf_counter())
                loop.quit()

        if preview is not None:
            preview.events.data.connect(on_data)
        start = time.perf_counter()
        QTest.mouseClick(canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
        if preview is None:  # first click: the helper layers appear with it
            self._wait(lambda: self.idle() and bool(self.widget.object_masks))
            return {}
        if not updated:
            QTimer.singleShot(300_000, loop.quit)
            loop.exec()
        preview.events.data.disconnect(on_data)
        if not updated:
            raise TimeoutError("no preview within 300 s")
        self._wait(self.idle)
        return {"total": updated[0] - start, "worker": self.stamps["result"] - start,
                "gui": updated[0] - self.stamps["result"],
                "predict_in_worker": self.stamps["predict"]}  # fmt: skip

    def _has_preview(self) -> bool:
        return any(layer.name == "SAM preview" for layer in self.viewer.layers)

    def core_predict(self, yx: tuple[float, float]) -> float:
        """Session.predict alone for a click at (y, x), in this process (seconds)."""
        session = self.widget.session(self.widget.model_combo.currentText())
        embedding = self.widget._embedding(*self.widget._embedding_job_parts(), None)
        start = time.perf_counter()
        session.predict(embedding, points=np.array([[yx[1], yx[0]]]), labels=np.array([1]))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 clicks per load level")
    parser.add_argument("--clicks", type=int, default=None)
    parser.add_argument("--loads", default="0,1,2", help="busy processes per level (0,1,2)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    clicks_per_level = args.clicks or (6 if args.quick else 15)
    levels = [int(v) for v in args.loads.split(",")]

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1280, 1024))
        display.start()
    sys.path.insert(0, str(ROOT))
    image, clicks = _image_and_clicks(clicks_per_level + 1)
    bench = Bench(image)
    bench.click(clicks[0])  # warm-up: computes and caches the embedding
    bench.clear()
    result: dict = {
        "what": "napari click -> preview layer updated, MobileSAM, 1040x1388 image, 1 point",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "levels": {},
    }
    try:
        for busy in levels:
            hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
            try:
                bench._pump(0.5)
                load = os.getloadavg()
                rows = []
                for yx in clicks[1:]:
                    rows.append(bench.click(yx))
                    bench.clear()
                core = [bench.core_predict(yx) for yx in clicks[1 : 1 + max(3, len(clicks) // 2)]]
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            result["levels"][str(busy)] = {
                "busy_processes": busy,
                "load_avg_at_start": load,
                **{k: _percentiles([r[k] for r in rows]) for k in STAGES},
                "core_predict": _percentiles(core),
            }
    finally:
        bench.viewer.close()
        if display is not None:
            display.stop()

    print(f"\n{result['what']}")
    print("| busy processes | load avg | click → preview (median / p90) | click → worker done "
          "| worker done → layer updated | predict in the worker | predict alone |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for level in result["levels"].values():
        cells = [
            f"{level[k]['median_ms']} / {level[k]['p90_ms']} ms" for k in (*STAGES, "core_predict")
        ]
        print(f"| {level['busy_processes']} | {level['load_avg_at_start'][0]:.2f} | "
              + " | ".join(cells) + " |")  # fmt: skip
    out = args.out or RESULTS / f"napari-latency-{dt.datetime.now():%Y-%m-%d-%H%M}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
