"""Where one prompt's time goes, and whether onnxruntime runs the mask decoder faster (issue 16).

    .venv/bin/python benchmarks/bench_decoder_backends.py           # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_decoder_backends.py --calls 10

MobileSAM, fp32, this process's thread count. For each image (a 512² EM slice, a 1040×1388
nuclei image; as `bench_latency.py`) and one positive point at the centre:

1. **Stages of `Predictor.predict` (1 point → 3 masks at image size)**, timed separately and
   interleaved round by round: the prompt encoder + mask decoder (`predict_low_res`: 3
   low-res 256² logits), the upsampling of those logits to the image size
   (`mask_upsampling.upsample_logits`), and the threshold into bool masks; plus the whole
   `predict` call. Median and p90 in ms.
2. **The decoder in PyTorch against the same decoder in onnxruntime**: `MaskDecoder.predict_all`
   (4 low-res masks + IoU for B prompts of 2 tokens: a point and the padding point) exported
   with a dynamic batch axis (TorchScript exporter, opset 17) and run by onnxruntime's CPU
   provider with as many intra-op threads as torch uses and no spin-waiting. PyTorch runs it
   twice: as the predictor does (the per-image layer-0 terms `share_image_side` computed once
   per image) and without them (the graph that was exported). B = 1 and B = 16, interleaved;
   ms per prompt. Outputs are checked to agree (max |logit difference|).
3. **Profile** of `predict` on the 1040×1388 image (torch.profiler, 10 calls): self CPU time per
   operator, top 12.

The load average is recorded before each part. Results:
benchmarks/results/decoder_backends-<date-time>.json and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

# isort: off
import sam_core  # first, as in every front end: sets the OpenMP waits before torch loads
import torch

# isort: on

from bench_latency import DATA, IMAGES, RESULTS, _prompt, _read_rgb, _stats  # same images

BATCHES = (1, 16)


def _summary(seconds: list[float], per: int = 1) -> dict:
    """Median / p90 ms per prompt (`per` prompts per call): bench_latency's statistics."""
    return _stats([t / per for t in seconds])


def _interleaved(calls: dict, rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Each callable once per round, in turn; wall seconds per call."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


class _DecoderGraph(torch.nn.Module):
    """The exported graph: `predict_all` without the per-image shared terms."""

    def __init__(self, decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, embedding, image_pe, sparse, dense):
        return self.decoder.predict_all(embedding, image_pe, sparse, dense)


def stage_times(predictor, image: np.ndarray, rounds: int) -> dict:
    from sam_core.mask_upsampling import upsample_logits
    from sam_core.prompts import build_prompts

    predictor.set_image(image)
    geometry = predictor.embedding.geometry
    point = [_prompt(image)[0]]
    prompts = build_prompts(geometry, point, [1])
    low_res, _ = predictor.predict_low_res(prompts, multimask=True)
    logits = upsample_logits(low_res[0], geometry)

    def decode():
        predictor.predict_low_res(build_prompts(geometry, point, [1]), multimask=True)

    calls = {
        "prompt encoder + decoder (3 low-res masks)": decode,
        "upsampling to image size (3 masks)": lambda: upsample_logits(low_res[0], geometry),
        "threshold to bool (3 masks)": lambda: logits > 0,
        "whole predict()": lambda: predictor.predict(points=point, labels=[1]),
    }
    with torch.inference_mode():
        times = _interleaved(calls, rounds)
    return {name: _summary(t) for name, t in times.items()}


def backend_times(predictor, image: np.ndarray, rounds: int, workdir: Path) -> dict:
    import onnxruntime

    model = predictor.model
    decoder = model.mask_decoder
    predictor.set_image(image)
    embedding = predictor.embedding.features
    with torch.inference_mode():
        image_pe = model.prompt_encoder.dense_positional_encoding()
        _, dense = model.prompt_encoder(None, None, None)
        shared = decoder.share_image_side(embedding, image_pe, dense)
    graph = _DecoderGraph(decoder).eval()
    path = workdir / "decoder_batch.onnx"
    example_sparse = torch.randn(2, 2, embedding.shape[1])
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (embedding, image_pe, example_sparse, dense),
            str(path),
            input_names=["image_embeddings", "image_pe", "sparse", "dense"],
            output_names=["low_res_logits", "iou"],
            dynamic_axes={"sparse": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # Without this, onnxruntime's threads spin after each run and slow the next (PyTorch) call
    # of the interleaved round about 2x (see bench_latency.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out: dict = {"onnxruntime": onnxruntime.__version__}
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    for batch in BATCHES:
        points = rng.uniform([0, 0], [w, h], size=(batch, 1, 2))
        from sam_core.prompts import build_prompts

        prompts = build_prompts(predictor.embedding.geometry, points, np.ones((batch, 1)))
        with torch.inference_mode():
            sparse, _ = model.prompt_encoder((prompts.points_xy, prompts.point_labels), None, None)
        feed = {
            "image_embeddings": embedding.detach().numpy(),
            "image_pe": image_pe.detach().numpy(),
            "sparse": sparse.detach().numpy(),
            "dense": dense.detach().numpy(),
        }
        with torch.inference_mode():
            reference = decoder.predict_all(embedding, image_pe, sparse, dense, shared)[0]
        onnx_logits = session.run(None, feed)[0]
        calls = {
            "PyTorch, per-image terms shared (as the predictor)": (
                lambda s=sparse: decoder.predict_all(embedding, image_pe, s, dense, shared)
            ),
            "PyTorch, exported graph": lambda s=sparse: graph(embedding, image_pe, s, dense),
            "onnxruntime, exported graph": lambda f=feed: session.run(None, f),
        }
        with torch.inference_mode():
            times = _interleaved(calls, rounds)
        out[f"B={batch}"] = {
            "max_abs_logit_diff_onnx_vs_pytorch": float(
                np.abs(onnx_logits - reference.detach().numpy()).max()
            ),
            **{name: _summary(t, per=batch) for name, t in times.items()},
        }
    return out


def profile_predict(predictor, image: np.ndarray) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    predictor.set_image(image)
    point = [_prompt(image)[0]]
    for _ in range(3):
        predictor.predict(points=point, labels=[1])
    calls = 10
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            predictor.predict(points=point, labels=[1])
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    return [
        {
            "op": e.key,
            "self_cpu_ms_per_predict": round(e.self_cpu_time_total / 1000.0 / calls, 2),
            "calls_per_predict": e.count // calls,
        }
        for e in rows
    ]


def _markdown(result: dict) -> str:
    lines = []
    for image, parts in result["images"].items():
        lines.append(f"\n#### {image}: stages of one prompt (load {parts['load_stages']:.2f})\n")
        lines.append("| stage | median ms | p90 ms |\n|---|---|---|")
        for name, s in parts["stages"].items():
            lines.append(f"| {name} | {s['median_ms']} | {s['p90_ms']} |")
        lines.append(
            f"\n#### {image}: mask decoder per prompt, PyTorch vs onnxruntime "
            f"(load {parts['load_backends']:.2f})\n"
        )
        lines.append("| B | implementation | median ms / prompt | p90 ms / prompt |")
        lines.append("|---|---|---|---|")
        for key, cell in parts["backends"].items():
            if not key.startswith("B="):
                continue
            for name, s in cell.items():
                if isinstance(s, dict):
                    lines.append(f"| {key[2:]} | {name} | {s['median_ms']} | {s['p90_ms']} |")
            lines.append(
                f"| {key[2:]} | max abs logit difference ONNX vs PyTorch | "
                f"{cell['max_abs_logit_diff_onnx_vs_pytorch']:.1e} | |"
            )
    if result.get("profile"):
        lines.append("\n#### profile of predict() on nuclei 1040×1388 (self CPU, ms per call)\n")
        lines.append("| op | ms | calls |\n|---|---|---|")
        for row in result["profile"]:
            lines.append(
                f"| {row['op']} | {row['self_cpu_ms_per_predict']} | {row['calls_per_predict']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="rounds per cell (default 30)")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()

    from sam_core import Predictor, load_model

    predictor = Predictor(load_model("vit_t"), device="cpu")
    result: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "openmp_waits": sam_core.openmp_waits.state(),
        },
        "images": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in IMAGES.items():
            image = _read_rgb(DATA / rel)
            parts: dict = {"load_stages": os.getloadavg()[0]}
            parts["stages"] = stage_times(predictor, image, args.calls)
            parts["load_backends"] = os.getloadavg()[0]
            parts["backends"] = backend_times(predictor, image, args.calls, Path(tmp))
            result["images"][name] = parts
            print(f"{name} done", flush=True)
    if not args.no_profile:
        result["load_profile"] = os.getloadavg()[0]
        result["profile"] = profile_predict(predictor, _read_rgb(DATA / IMAGES["nuclei_1040x1388"]))
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = RESULTS / f"decoder_backends-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print(_markdown(result))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
