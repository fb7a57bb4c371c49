"""MobileSAM encoder: samscope `set_image` against the official `SamPredictor.set_image`.

    .venv/bin/python benchmarks/bench_encoder.py            # 5 alternating rounds (~2 min)
    .venv/bin/python benchmarks/bench_encoder.py --quick    # 3 rounds (< 1.5 min on 2 cores)
    .venv/bin/python benchmarks/bench_encoder.py --bf16     # also bf16 (only where native)

Two worker processes stay alive for the whole run: ours (this venv, `sam_core.Predictor`) and
the official MobileSAM code (the venv built by ../shared/reference/official/setup.sh, or
--official-python). Each loads the real MobileSAM weights and warms up; then the parent
alternates one `set_image` in each, so both see the same machine load. Each `set_image`
includes preprocessing (resize, normalise, pad) and the fp32 encoder pass on one 1024²
input; the official worker runs with the malloc defaults a user gets. Reports the medians,
their ratio, the agreement of the two embeddings (max |diff|, cosine), the load average, and
writes benchmarks/results/encoder-<date-time>.json.

bf16 (--bf16) runs only where the CPU computes bf16 natively (`sam_core.device`); it reports
its median, the embedding cosine to fp32 and the IoU of one-click masks against fp32's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGE = SHARED / "data" / "dsb2018_fluo_dev" / "images" / "c901794d1a421d52.png"
OFFICIAL_PYTHON = Path("/work/official_venv/bin/python")
RESULTS = Path(__file__).resolve().parent / "results"

# The worker loop, run by either interpreter: reads "run" / "save PATH" / "quit" lines.
WORKER = r"""
import sys, time
import numpy as np
from PIL import Image

which, checkpoint, image_path, precision = sys.argv[1:5]
rgb = np.asarray(Image.open(image_path).convert("RGB")) if image_path != "-" else (
    np.random.default_rng(0).integers(0, 256, (1040, 1388, 3), dtype=np.uint8))
import torch
torch.manual_seed(0)
if which == "official":
    from mobile_sam import SamPredictor, sam_model_registry
    model = sam_model_registry["vit_t"](checkpoint=checkpoint).eval()
    predictor = SamPredictor(model)
    def embed():
        predictor.set_image(rgb)
        return predictor.features
else:
    from sam_core import Predictor, load_model
    predictor = Predictor(load_model("vit_t"), device="cpu", precision=precision)
    def embed():
        return predictor.set_image(rgb).features
for _ in range(2):  # warm-up: weights paged in, kernels chosen, allocator settled
    embed()
print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        start = time.perf_counter()
        embed()
        print(f"{time.perf_counter() - start:.6f}", flush=True)
    elif command[0] == "save":
        np.save(command[1], embed().float().numpy())
        print("saved", flush=True)
    else:
        break
"""


class Worker:
    """One long-lived `set_image` process; `run()` returns the seconds of one call."""

    def __init__(self, python: Path, which: str, checkpoint: Path, image: str, precision: str):
        self.name = which if precision == "fp32" else f"{which} {precision}"
        self.proc = subprocess.Popen(
            [str(python), "-c", WORKER, which, str(checkpoint), image, precision],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._expect("ready")

    def _expect(self, word: str) -> str:
        line = self.proc.stdout.readline().strip()
        if not line or (word and line != word):
            raise RuntimeError(f"{self.name} worker said {line!r} (expected {word!r})")
        return line

    def _send(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def run(self) -> float:
        return float(self._send("run"))

    def save(self, path: Path) -> np.ndarray:
        if self._send(f"save {path}") != "saved":
            raise RuntimeError(f"{self.name} worker could not save its embedding")
        return np.load(path)

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _stats(seconds: list[float]) -> dict:
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "runs_s": [round(s, 4) for s in seconds],
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _bf16_mask_agreement(fp32: np.ndarray, bf16: np.ndarray, image_hw) -> float:
    """Mean IoU of one-click masks (a 4x4 grid of clicks, 3 masks each) decoded in fp32 from
    the fp32 and the bf16 embeddings: how much bf16 encoding changes what users see."""
    import torch

    from sam_core import Predictor, load_model
    from sam_core.embedding import ImageEmbedding
    from sam_core.image_input import ImageGeometry

    predictor = Predictor(load_model("vit_t"), device="cpu")
    geometry = ImageGeometry.for_shape(image_hw)
    h, w = image_hw
    clicks = [((i + 0.5) * w / 4, (j + 0.5) * h / 4) for i in range(4) for j in range(4)]
    results = []
    for features in (fp32, bf16):
        embedding = ImageEmbedding(torch.from_numpy(features), geometry, predictor.model_name)
        predictor.set_embedding(embedding)
        results.append([predictor.predict(points=[xy], labels=[1])[0] for xy in clicks])
    ious = []
    for a, b in zip(*results, strict=True):
        inter = np.logical_and(a, b).sum(axis=(1, 2))
        union = np.logical_or(a, b).sum(axis=(1, 2))
        ious += list(np.where(union == 0, 1.0, inter / np.maximum(union, 1)))
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="also bf16, where the CPU has it")
    parser.add_argument("--official-python", type=Path, default=OFFICIAL_PYTHON)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)

    sys.path.insert(0, str(ROOT))
    from sam_core.checkpoints import fetch_checkpoint
    from sam_core.device import bf16_support

    checkpoint = fetch_checkpoint("vit_t", progress=False)
    if not args.official_python.is_file():
        sys.exit(f"no official venv at {args.official_python}: run "
                 "../shared/reference/official/setup.sh or pass --official-python")  # fmt: skip
    image = str(IMAGE) if IMAGE.is_file() else "-"
    image_hw = (1040, 1388)
    support = bf16_support()
    load_before = os.getloadavg()

    workers = [
        Worker(Path(sys.executable), "samscope", checkpoint, image, "fp32"),
        Worker(args.official_python, "official", checkpoint, image, "fp32"),
    ]
    if args.bf16 and support.native:
        workers.append(Worker(Path(sys.executable), "samscope", checkpoint, image, "bf16"))
    times: dict[str, list[float]] = {w.name: [] for w in workers}
    for r in range(rounds):
        order = workers if r % 2 == 0 else workers[::-1]  # alternate who goes first
        for worker in order:
            times[worker.name].append(worker.run())
    tmp = RESULTS / ".encoder_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    embeddings = {w.name: w.save(tmp / f"{w.name.replace(' ', '_')}.npy") for w in workers}
    for worker in workers:
        worker.close()
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()

    ours, official = embeddings["samscope"], embeddings["official"]
    result = {
        "what": "MobileSAM set_image (preprocess + fp32 encoder), 1040x1388 -> 1024^2 input",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_capability": support.capability,
            "bf16": support.describe(),
        },
        "rounds": rounds,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "samscope": _stats(times["samscope"]),
        "official": _stats(times["official"]),
        "agreement": {
            "max_abs_diff": float(np.abs(ours - official).max()),
            "cosine": _cosine(ours, official),
        },
    }
    result["speedup_median"] = result["official"]["median_s"] / result["samscope"]["median_s"]
    if "samscope bf16" in times:
        bf16 = embeddings["samscope bf16"]
        result["samscope_bf16"] = {
            **_stats(times["samscope bf16"]),
            "cosine_to_fp32": _cosine(bf16, ours),
            "mask_miou_to_fp32": _bf16_mask_agreement(ours, bf16, image_hw),
        }
    elif args.bf16:
        result["samscope_bf16"] = {"skipped": f"no native bf16 here: {support.describe()}"}

    print(f"\n{result['what']}, {rounds} alternating rounds, load avg {load_before[0]:.2f} "
          f"-> {result['load_avg_after'][0]:.2f}")  # fmt: skip
    print("| implementation | median | min | runs |")
    print("| --- | --- | --- | --- |")
    for name in times:
        s = _stats(times[name])
        print(f"| {name} | {s['median_s']:.3f} s | {s['min_s']:.3f} s | {s['runs_s']} |")
    print(f"\nspeed-up (official median / ours): {result['speedup_median']:.2f}x; embeddings "
          f"max|diff| {result['agreement']['max_abs_diff']:.2e}, "
          f"cosine {result['agreement']['cosine']:.7f}")  # fmt: skip
    if "samscope_bf16" in result:
        print(f"bf16: {result['samscope_bf16']}")
    out = args.out or RESULTS / f"encoder-{dt.datetime.now():%Y-%m-%d-%H%M}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
