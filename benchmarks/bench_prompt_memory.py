"""Peak memory of many prompts in one `predict` call: one-shot vs chunked mask upsampling.

    .venv/bin/python benchmarks/bench_prompt_memory.py             # 200 boxes on 2048², ~3 min
    .venv/bin/python benchmarks/bench_prompt_memory.py --boxes 64 --size 1024
    .venv/bin/python benchmarks/bench_prompt_memory.py --logits    # also return_logits=True

The image is 2048² "random-ish": smooth blobs plus noise (uint16). Its MobileSAM (vit_t, real
weights) embedding is computed once in this process and saved; every variant then runs in a
fresh subprocess that loads the model and that saved embedding (no encoder pass, whose
temporaries would hide the call's peak), makes one warm-up call with a single box, and then the
measured call. "Peak increase" is `ru_maxrss` after the call minus the resident set size just
before it: the call's own high-water mark above what was already in use.

Variants:
- `one-shot (old)`: the previous `Predictor.predict` path, inlined here as the baseline: the
  decoder (`predict_low_res`), then `upsample_logits` on all masks at once, then `> 0`.
- `chunked (new)`: `Predictor.predict(box=boxes, multimask=False)`, which upsamples a chunk of
  masks at a time into a preallocated output (`sam_core.mask_upsampling.upsample_to_numpy`).
Both outputs are compared (bit-identical masks) in a last subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GiB = 2**30


def random_ish_image(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) uint16: smooth blobs of several scales plus noise, like a fluorescence field."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = np.zeros((size, size), np.float32)
    for sigma, weight in ((size / 64, 1.0), (size / 256, 0.5)):
        field += weight * ndi.gaussian_filter(
            rng.normal(size=(size, size)).astype(np.float32), sigma
        )
    field = (field - field.min()) / (field.max() - field.min())
    noisy = 800 + 3000 * field + rng.normal(0, 40, field.shape)
    return noisy.clip(0, 65535).astype(np.uint16)


def box_grid(count: int, size: int, seed: int = 1) -> np.ndarray:
    """(count, 4) x0, y0, x1, y1 pixel boxes of 40-200 px scattered over a size² image."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(40, 200, (count, 2))
    x0y0 = rng.uniform(0, size - 200, (count, 2))
    return np.concatenate([x0y0, x0y0 + wh], axis=1)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# -------------------------------------------------------------------------- one variant
def run_variant(variant: str, workdir: Path, return_logits: bool) -> dict:
    """Runs in a fresh subprocess: load model + embedding, warm up, measure one call."""
    import torch

    from sam_core import ImageEmbedding, ImageGeometry, Predictor, load_model
    from sam_core.mask_upsampling import upsample_logits
    from sam_core.prompts import build_prompts

    saved = torch.load(workdir / "embedding.pt", weights_only=True)
    geometry = ImageGeometry(tuple(saved["original_hw"]), tuple(saved["input_hw"]))
    boxes = np.load(workdir / "boxes.npy")
    predictor = Predictor(load_model("vit_t", device="cpu"), device="cpu")
    predictor.set_embedding(ImageEmbedding(saved["features"], geometry, predictor.model_name))

    def one_shot(box: np.ndarray):
        prompts = build_prompts(geometry, box=box)
        low_res, scores = predictor.predict_low_res(prompts, multimask=False)
        full = upsample_logits(low_res, geometry)
        masks = full if return_logits else full > 0.0
        return masks.cpu().numpy(), scores.cpu().numpy(), low_res.cpu().numpy()

    def chunked(box: np.ndarray):
        return predictor.predict(box=box, multimask=False, return_logits=return_logits)

    call = {"one-shot (old)": one_shot, "chunked (new)": chunked}[variant]
    call(boxes[:1])  # warm-up: lazy allocations, decoder image side
    rss_before = _rss_bytes()
    max_before = _max_rss_bytes()
    start = time.perf_counter()
    masks, _, _ = call(boxes)
    seconds = time.perf_counter() - start
    peak = _max_rss_bytes()
    np.save(workdir / f"masks-{variant.split()[0]}.npy", masks)
    return {
        "variant": variant,
        "return_logits": return_logits,
        "boxes": len(boxes),
        "image_hw": list(geometry.original_hw),
        "output_bytes": int(masks.nbytes),
        "output_shape": list(masks.shape),
        "output_dtype": str(masks.dtype),
        "rss_before_bytes": rss_before,
        "max_rss_before_bytes": max_before,
        "peak_bytes": peak,
        "peak_increase_bytes": peak - rss_before,
        "masked": peak <= max_before,  # the call stayed below an earlier high-water mark
        "seconds": seconds,
    }


def _subprocess(args: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"variant {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- driver
def prepare(workdir: Path, size: int, count: int) -> None:
    """Embed the image once (this process) and save the embedding and boxes for the variants."""
    import torch

    from sam_core import Predictor, load_model

    predictor = Predictor(load_model("vit_t", device="cpu"), device="cpu")
    embedding = predictor.set_image(random_ish_image(size))
    torch.save(
        {
            "features": embedding.features.cpu(),
            "original_hw": list(embedding.geometry.original_hw),
            "input_hw": list(embedding.geometry.input_hw),
        },
        workdir / "embedding.pt",
    )
    np.save(workdir / "boxes.npy", box_grid(count, size))


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | output | output GiB | peak RSS increase GiB | increase − output GiB "
        "| time s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        shape = "×".join(str(s) for s in row["output_shape"])
        flag = " (masked by an earlier peak)" if row["masked"] else ""
        lines.append(
            f"| {row['variant']} | {shape} {row['output_dtype']} "
            f"| {row['output_bytes'] / GiB:.2f} | {row['peak_increase_bytes'] / GiB:.2f}{flag} "
            f"| {(row['peak_increase_bytes'] - row['output_bytes']) / GiB:.2f} "
            f"| {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=200, help="boxes in the call (200)")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (2048)")
    parser.add_argument("--logits", action="store_true", help="also measure return_logits=True")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--return-logits", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_variant(args.one, args.workdir, args.return_logits)))
        return

    with tempfile.TemporaryDirectory(prefix="bench_prompt_memory_") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.size, args.boxes)
        rows = []
        for return_logits in (False, True) if args.logits else (False,):
            pair = []
            for variant in ("one-shot (old)", "chunked (new)"):
                extra = ["--return-logits"] if return_logits else []
                pair.append(_subprocess(["--one", variant, "--workdir", tmp, *extra]))
            old, new = (
                np.load(workdir / f"masks-{k}.npy", mmap_mode="r") for k in ("one-shot", "chunked")
            )
            for row in pair:
                row["identical"] = bool(np.array_equal(old, new))
            del old, new
            rows.extend(pair)
    print(f"{args.boxes} boxes, multimask=False, on a {args.size}x{args.size} uint16 image")
    print(table(rows))
    print("identical outputs:", all(row["identical"] for row in rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
