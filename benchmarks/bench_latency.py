"""Per-prompt latency, quiet and under CPU contention, side by side with the official code.

    .venv/bin/python benchmarks/bench_latency.py            # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_latency.py --quick    # < 3 min: fewer calls per cell

One process holds both predictors: ours (`sam_core.Predictor`, MobileSAM, fp32) and the
official `SamPredictor` (MobileSAM's `mobile_sam` package, imported from the venv that
`../shared/reference/official/setup.sh` builds, default /work/official_venv, `--official-venv`;
it runs on this same torch). If `sam_core.onnx_export` exists, our decoder exported to ONNX
and the official ONNX export (`mobile_sam.utils.onnx.SamOnnxModel`) run with onnxruntime too
(their masks at image size: the best mask only, as those exports return one).

For each load — quiet, then 1 and 2 busy processes (`python -c "while True: pass"`, spawned
here and killed after) — and each image (a 512² EM slice, a 1040×1388 nuclei image), calls
are interleaved round by round: every implementation answers the same call in turn, so a
change of background load hits all of them alike. Calls: one positive point → 3 masks, one
point → 1 mask, one box → 1 mask; all at image size. Each cell reports median and p90 (ms).
The table also gives, per implementation and call, the contended/quiet ratios of the medians
(targets for ours: 1 busy ≤ 2×, 2 busy ≤ 3× and p90 ≤ 4× the quiet median).

The machine may not be quiet: the 1-minute load average is recorded before each phase.
Results: benchmarks/results/latency-<date-time>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAMSCOPE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
IMAGES = {
    "em_512x512": "isbi2012_em_membranes/images/slice_00.png",
    "nuclei_1040x1388": "dsb2018_fluo_dev/images/c901794d1a421d52.png",
}
CALLS = ("point_3masks", "point_1mask", "box_1mask")
BUSY_CODE = "while True: pass"


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _prompt(image: np.ndarray) -> tuple[list[float], list[float]]:
    """A point near the centre and a box around it (xy pixels)."""
    h, w = image.shape[:2]
    x, y = w * 0.5, h * 0.5
    return [x, y], [x - w * 0.15, y - h * 0.15, x + w * 0.15, y + h * 0.15]


# --------------------------------------------------------------------------- implementations
class Ours:
    name = "samscope (PyTorch)"

    def __init__(self) -> None:
        from sam_core import Predictor, load_model

        self.predictor = Predictor(load_model("vit_t", device="cpu"))

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def call(self, kind: str, point: list[float], box: list[float]) -> None:
        p = self.predictor
        if kind == "point_3masks":
            p.predict(points=[point], labels=[1])
        elif kind == "point_1mask":
            p.predict(points=[point], labels=[1], multimask=False)
        else:
            p.predict(box=box, multimask=False)


class Official:
    name = "official SamPredictor (PyTorch)"

    def __init__(self, checkpoint: Path) -> None:
        from mobile_sam import SamPredictor, sam_model_registry

        self.model = sam_model_registry["vit_t"](checkpoint=str(checkpoint)).eval()
        self.predictor = SamPredictor(self.model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def call(self, kind: str, point: list[float], box: list[float]) -> None:
        p = self.predictor
        if kind == "point_3masks":
            p.predict(np.array([point]), np.array([1]), multimask_output=True)
        elif kind == "point_1mask":
            p.predict(np.array([point]), np.array([1]), multimask_output=False)
        else:
            p.predict(box=np.array(box), multimask_output=False)


class OnnxDecoder:
    """An ONNX decoder with the official input convention, run by onnxruntime (1 mask out).

    embed: image → (1, 256, 64, 64) float32 embedding; to_frame: the predictor's scale from
    original pixels to the 1024 input frame.
    """

    def __init__(self, name: str, path: Path, embed, scale_of) -> None:
        import onnxruntime

        self.name = name
        options = onnxruntime.SessionOptions()
        # onnxruntime's pool threads spin after each run by default; in an interleaved round
        # they took the CPU from the next implementation (our PyTorch predictor measured
        # 118 against 57 ms right after an ONNX call): they must wait like torch's.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._embed, self._scale_of = embed, scale_of

    def set_image(self, image: np.ndarray) -> None:
        self.embedding = self._embed(image)
        self.scale = self._scale_of(image)
        self.size = np.array(image.shape[:2], dtype=np.float32)

    def call(self, kind: str, point: list[float], box: list[float]) -> None:
        if kind == "box_1mask":
            coords = np.array([[box[:2], box[2:]]], dtype=np.float32)
            labels = np.array([[2, 3]], dtype=np.float32)
        else:
            coords = np.array([[point, [0.0, 0.0]]], dtype=np.float32)
            labels = np.array([[1, -1]], dtype=np.float32)
        self.session.run(
            None,
            {
                "image_embeddings": self.embedding,
                "point_coords": coords * self.scale,
                "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
                "has_mask_input": np.zeros(1, dtype=np.float32),
                "orig_im_size": self.size,
            },
        )


def _onnx_implementations(ours: Ours, official: Official | None, workdir: Path) -> list:
    """Our ONNX export and the official one, where both packages are there (else none)."""
    try:
        import onnxruntime  # noqa: F401

        from sam_core import onnx_export
    except ImportError:
        return []
    impls = []
    predictor = ours.predictor

    def embed(image: np.ndarray) -> np.ndarray:
        return predictor.compute_embedding(image).features.cpu().numpy()

    def scale_of(image: np.ndarray) -> float:
        return 1024.0 / max(image.shape[:2])

    path = onnx_export.export_decoder_onnx(
        predictor.model, workdir / "ours.onnx", return_single_mask=True
    )
    impls.append(OnnxDecoder("samscope ONNX (onnxruntime, best mask)", path, embed, scale_of))
    if official is not None:
        import torch
        from mobile_sam.utils.onnx import SamOnnxModel

        wrapper = SamOnnxModel(official.model, return_single_mask=True)
        inputs = {
            "image_embeddings": torch.randn(1, 256, 64, 64),
            "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
            "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
            "mask_input": torch.randn(1, 1, 256, 256),
            "has_mask_input": torch.tensor([1], dtype=torch.float),
            "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
        }
        official_path = workdir / "official.onnx"
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(inputs.values()),
                str(official_path),
                input_names=list(inputs),
                output_names=["masks", "iou_predictions", "low_res_masks"],
                dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        impls.append(
            OnnxDecoder("official ONNX (onnxruntime, best mask)", official_path, embed, scale_of)
        )
    return impls


# ---------------------------------------------------------------------------------- running
def _busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_CODE]) for _ in range(count)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def _measure(impls: list, image: np.ndarray, calls: int, warmup: int) -> dict:
    """{impl name: {call kind: [seconds, ...]}}, calls interleaved round by round."""
    point, box = _prompt(image)
    times = {impl.name: {kind: [] for kind in CALLS} for impl in impls}
    for _ in range(warmup):
        for impl in impls:
            for kind in CALLS:
                impl.call(kind, point, box)
    for _ in range(calls):
        for kind in CALLS:
            for impl in impls:
                start = time.perf_counter()
                impl.call(kind, point, box)
                times[impl.name][kind].append(time.perf_counter() - start)
    return times


def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "n": len(ms),
    }


def _table(rows: list[dict], loads: list[int]) -> str:
    head = ["image", "implementation", "call"]
    for n in loads:
        head.append(f"{n} busy: median / p90 ms" if n else "quiet: median / p90 ms")
    head += [f"{n} busy / quiet (median, p90)" for n in loads if n]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed = {(r["image"], r["implementation"], r["call"], r["busy"]): r for r in rows}
    seen = []
    for r in rows:
        key = (r["image"], r["implementation"], r["call"])
        if key not in seen:
            seen.append(key)
    for image, impl, call in seen:
        cells = [image, impl, call]
        quiet = keyed.get((image, impl, call, 0))
        for n in loads:
            r = keyed.get((image, impl, call, n))
            cells.append(f"{r['median_ms']} / {r['p90_ms']}" if r else "")
        for n in loads:
            r = keyed.get((image, impl, call, n))
            if n and r and quiet:
                cells.append(
                    f"{r['median_ms'] / quiet['median_ms']:.2f}× / "
                    f"{r['p90_ms'] / quiet['median_ms']:.2f}×"
                )
            elif n:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls per cell (< 3 min)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per cell")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument("--official-venv", default="/work/official_venv")
    parser.add_argument("--no-official", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument(
        "--gomp-spincount",
        default=None,
        help="set GOMP_SPINCOUNT before torch loads, instead of samscope's short spin-waits "
        "(300000 = libgomp's own default: the before/after of sam_core.openmp_waits)",
    )
    args = parser.parse_args()
    calls = args.calls or (12 if args.quick else 40)
    if args.gomp_spincount is not None:
        os.environ["GOMP_SPINCOUNT"] = str(args.gomp_spincount)

    # isort: off
    import sam_core  # first, as in every front end: sets the OpenMP waits before torch loads
    import torch

    # isort: on

    from sam_core.checkpoints import fetch_checkpoint

    ours = Ours()
    impls: list = [ours]
    official = None
    if not args.no_official:
        site = sorted(Path(args.official_venv).glob("lib/python3*/site-packages"))
        if site:
            sys.path.append(str(site[0]))  # after ours: our torch, their packages
            try:
                official = Official(fetch_checkpoint("vit_t"))
                impls.append(official)
            except ImportError as error:
                print(f"official code not importable ({error}); skipping it", flush=True)
        else:
            print(f"no official venv at {args.official_venv}; skipping it", flush=True)
    rows: list[dict] = []
    load_avg: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        if not args.no_onnx:
            impls += _onnx_implementations(ours, official, Path(tmp))
        images = {name: _read_rgb(DATA / IMAGES[name]) for name in args.images}
        for name, image in images.items():
            for impl in impls:
                impl.set_image(image)
            for busy in args.loads:
                procs = _busy(busy)
                try:
                    time.sleep(1.0 if busy else 0.0)
                    load_avg[f"{name}/{busy}"] = [round(v, 2) for v in os.getloadavg()]
                    times = _measure(impls, image, calls, warmup=1 if args.quick else 3)
                finally:
                    _stop(procs)
                for impl in impls:
                    for kind in CALLS:
                        row = {"image": name, "implementation": impl.name, "call": kind}
                        row |= {"busy": busy} | _stats(times[impl.name][kind])
                        rows.append(row)
                print(
                    f"done: {name}, {busy} busy, load avg {load_avg[f'{name}/{busy}']}", flush=True
                )
    table = _table(rows, args.loads)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")  # two runs in a minute: two files
    path = RESULTS / f"latency-{stamp}.json"
    meta = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_before_each_phase": load_avg,
        "calls_per_cell": calls,
        "quick": args.quick,
        "openmp_waits": sam_core.openmp_waits.state(),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table)
    print(f"load average (1, 5, 15 min) before each phase: {load_avg}")
    print(f"OpenMP waits: {meta['openmp_waits']} (GOMP_SPINCOUNT={meta['GOMP_SPINCOUNT']})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
