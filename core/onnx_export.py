"""Export the prompt encoder + mask decoder to ONNX, with the official SAM export's interface.

Web and edge front ends written for SAM's ONNX decoder (the official notebook's convention)
run the exported file unchanged: the image encoder stays in PyTorch (or any runtime), and the
light prompt side runs in onnxruntime, onnxruntime-web, etc.

Inputs (all float32):
    image_embeddings  (1, 256, 64, 64)   the encoder output (`ImageEmbedding.features`)
    point_coords      (1, N, 2)          xy pixels in the 1024 input frame (after resizing the
                                         longest side to 1024, before padding)
    point_labels      (1, N)             1 positive, 0 negative, 2 / 3 box top-left /
                                         bottom-right corner, -1 padding; a prompt without a
                                         box must end with a padding point (at (0, 0))
    mask_input        (1, 1, 256, 256)   low-res logits of an earlier prediction
    has_mask_input    (1,)               1 to use `mask_input`, 0 to ignore it
    orig_im_size      (2,)               (H, W) of the original image in pixels
Outputs:
    masks             (1, M, H, W)       float32 logits at the original size (mask = > 0)
    iou_predictions   (1, M)             predicted IoU of each mask
    low_res_masks     (1, M, 256, 256)   logits to feed back as `mask_input`
M = 4 (index 0 the single-mask output, 1..3 the multimask outputs, paper §3 "ambiguity");
with `return_single_mask`, M = 1: the best multimask output (highest predicted IoU) for
1-2 tokens (one click plus padding, or a box), else the single-mask output.

Masks reach image size as in `sam_core.mask_upsampling`: bilinear ×4 of the low-res logits
over the resized image's extent, crop of the padding, bilinear resize to (H, W).

We use torch's TorchScript-based exporter (``dynamo=False``): it needs only `onnx`, while
the default dynamo exporter of torch ≥ 2.9 also needs `onnxscript`, which the `samscope[onnx]`
extra does not install; the decoder is a fixed-shape graph apart from N and (H, W), which
tracing captures exactly.
"""

from __future__ import annotations

import importlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import SamscopeError
from .image_input import MIN_INPUT_SIDE, MODEL_INPUT_SIZE
from .modeling.sam import LOW_RES_MASK_SIZE, SamModel

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
DEFAULT_OPSET = 17
# Upsampling factor from the 256² logits to the 1024² input frame.
_FACTOR = MODEL_INPUT_SIZE // LOW_RES_MASK_SIZE
# Score bonus that makes `argmax` pick the single-mask output for prompts of ≥ 3 tokens.
_SINGLE_MASK_BONUS = 1000.0


class OnnxUnavailableError(SamscopeError, ImportError):
    """`onnx` / `onnxruntime` is not installed (the optional extra `samscope[onnx]`)."""


def require(module: str) -> Any:
    """Import `module` ("onnx", "onnxruntime", "onnxruntime.quantization") or explain how to
    install it.

    Raises:
        OnnxUnavailableError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OnnxUnavailableError(
            f"ONNX export needs the package {module.split('.')[0]!r}, which is not installed: "
            f'pip install "samscope[onnx]" (installs onnx and onnxruntime)'
        ) from exc


class PromptDecoderForOnnx(nn.Module):
    """Prompt encoder + mask decoder with the official SAM ONNX interface (module docstring).

    Reuses the model's own modules (weights shared, nothing copied); pure tensor code so
    tracing records one graph valid for any number of points N and any image size (H, W).
    """

    def __init__(self, model: SamModel, return_single_mask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.return_single_mask = return_single_mask
        self.register_buffer(
            "image_pe", model.prompt_encoder.dense_positional_encoding().detach(), False
        )

    def _dense_prompt(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """(1, C, 64, 64): the downscaled mask where `has_mask_input` is 1, else "no mask"."""
        flag = has_mask_input.reshape(-1, 1, 1, 1)
        from_mask = self.prompt_encoder.mask_downscaling(mask_input)
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return flag * from_mask + (1 - flag) * no_mask

    def _pick_single(
        self, logits: torch.Tensor, iou: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 4, ...) → (1, 1, ...): best multimask output for ≤ 2 tokens, else output 0."""
        tokens = torch.ones_like(point_labels).sum(dim=1, keepdim=True)  # (1, 1), N as a tensor
        bonus = torch.zeros(iou.shape[1], dtype=iou.dtype, device=iou.device)
        bonus[0] = _SINGLE_MASK_BONUS
        # N ≤ 2: output 0 gets -1500 or -500 (never chosen); N ≥ 3: +500 or more (always).
        best = torch.argmax(iou + (tokens - 2.5) * bonus, dim=1, keepdim=True)  # (1, 1)
        picked_iou = torch.gather(iou, 1, best)
        index = best[:, :, None, None].expand(-1, -1, *logits.shape[-2:])
        return torch.gather(logits, 1, index), picked_iou

    @staticmethod
    def _to_image_size(low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(1, M, 256, 256) logits → (1, M, H, W) at orig_im_size (H, W), float pixels."""
        size = orig_im_size.to(torch.float32)
        scale = MODEL_INPUT_SIZE / torch.max(size)
        input_hw = torch.floor(size * scale + 0.5).clamp(MIN_INPUT_SIDE, MODEL_INPUT_SIZE)
        input_hw = input_hw.to(torch.int64)
        # Only the low-res cells that reach the resized image's extent (see mask_upsampling).
        cells = torch.clamp(torch.div(input_hw + _FACTOR - 1, _FACTOR, rounding_mode="floor") + 1,
                            max=LOW_RES_MASK_SIZE)  # fmt: skip
        x = low_res[:, :, : cells[0], : cells[1]]
        x = F.interpolate(x, scale_factor=float(_FACTOR), mode="bilinear", align_corners=False)
        x = x[:, :, : input_hw[0], : input_hw[1]]
        out_hw = orig_im_size.to(torch.int64)
        return F.interpolate(x, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shapes as in the module docstring; returns (masks, iou_predictions, low_res_masks)."""
        labels = point_labels.to(torch.int64)
        sparse = self.prompt_encoder._embed_sparse(point_coords, labels)
        dense = self._dense_prompt(mask_input, has_mask_input)
        logits, iou = self.mask_decoder.predict_all(image_embeddings, self.image_pe, sparse, dense)
        if self.return_single_mask:
            logits, iou = self._pick_single(logits, iou, point_labels)
        masks = self._to_image_size(logits, orig_im_size)
        return masks, iou, logits


def example_inputs(num_points: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes for tracing or a smoke run: one click plus padding."""
    coords = torch.zeros(1, num_points, 2)
    coords[0, 0] = torch.tensor([500.0, 400.0])
    labels = -torch.ones(1, num_points)
    labels[0, 0] = 1
    return (
        torch.randn(1, 256, 64, 64),
        coords,
        labels,
        torch.zeros(1, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE),
        torch.zeros(1),
        torch.tensor([1040.0, 1388.0]),
    )


def export_decoder_onnx(
    model: SamModel,
    out_path: str | Path,
    return_single_mask: bool = False,
    quantize: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the prompt encoder + mask decoder of `model` as an ONNX file; returns its path.

    quantize: dynamic int8 quantisation of the weights (onnxruntime.quantization; about 4x
        smaller, mask logits change slightly).
    Raises:
        OnnxUnavailableError: `onnx` (or, for `quantize`, `onnxruntime`) is not installed.
        OutputError: the output folder cannot be written.
    """
    require("onnx")
    quantization = require("onnxruntime.quantization") if quantize else None
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.is_dir():
        from .errors import OutputError

        raise OutputError(f"output folder {out_path.parent} does not exist")
    wrapper = PromptDecoderForOnnx(model.cpu().eval(), return_single_mask).eval()
    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
        "masks": {2: "height", 3: "width"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "decoder.onnx" if quantize else out_path
        # Tracing warns about Python branches on shapes: they depend only on the batch of one
        # prompt and on the number of tokens choosing between equal-valued attention orders.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                example_inputs(),
                str(float_path),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        if quantization is not None:
            quantization.quantize_dynamic(
                str(float_path), str(out_path), weight_type=quantization.QuantType.QUInt8
            )
    return out_path
