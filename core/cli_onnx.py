"""``samscope export-onnx``: write the prompt encoder + mask decoder as an ONNX file.

    samscope export-onnx --model vit_t --out decoder.onnx [--return-single-mask] [--quantize]

The file has the official SAM ONNX export's inputs and outputs (see `sam_core.onnx_export`
and docs/onnx.md). Needs the optional extra ``samscope[onnx]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .onnx_export import DEFAULT_OPSET, INPUT_NAMES, OUTPUT_NAMES, export_decoder_onnx, require
from .registry import DEFAULT_MODEL


def add_export_onnx_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the prompt encoder + mask decoder to ONNX (official SAM ONNX interface)",
        description="Write the prompt encoder and mask decoder as one ONNX graph with the "
        "inputs and outputs of the official SAM ONNX export, for onnxruntime (web, edge, "
        "C++...). The image encoder is not part of it. Needs `pip install samscope[onnx]`.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registry name (see `samscope models`) or checkpoint path (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--return-single-mask",
        action="store_true",
        help="output only the best mask (M=1) instead of all four (M=4)",
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="dynamic int8 quantisation of the weights (smaller; logits change slightly)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.set_defaults(run=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    from .loading import load_model

    require("onnx")  # fail before loading the model when the extra is missing
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    path = export_decoder_onnx(
        model, args.out, args.return_single_mask, args.quantize, opset=args.opset
    )
    size_mb = path.stat().st_size / 2**20
    masks = "1 (best)" if args.return_single_mask else "4 (single + 3 multimask)"
    print(f"wrote {path} ({size_mb:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"inputs: {', '.join(INPUT_NAMES)}")
    print(f"outputs: {', '.join(OUTPUT_NAMES)}; masks per prompt: {masks}")
    return 0
