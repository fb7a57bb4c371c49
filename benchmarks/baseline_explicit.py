"""A same-machine timing baseline: the straightforward way of computing SAM's encoder.

For timing only. It recomputes what our model computes the way the paper (appendix A) describes
it and the official code is known to do it, without any of our optimisations:

* ViT-B/L/H attention: explicit logits ``(q * scale) @ k.T``, the decomposed relative-position
  terms computed with einsum and added to the materialised (N, N) logits, softmax, ``@ v``.
  Global blocks therefore materialise 4096 x 4096 logits per head.
* TinyViT (MobileSAM) attention: explicit logits plus the learned per-offset bias, softmax, ``@ v``.
* TinyViT's conv + BatchNorm pairs: the convolution, then the BatchNorm as a second pass over
  the activations (our model folds the BatchNorm into the convolution's weights).
* Mask upsampling in ``predict``: two full ``F.interpolate`` passes, 256² → 1024² → crop the
  padding → original size, for every returned mask.

Written from the paper's description; no code of the official packages is copied or imported.
Everything else (convolutions, MLPs, norms, memory layout, the decoder) is our model's own code,
so the baseline measures only what these pieces cost. The modules are patched per instance,
reading only parameters whose names are fixed by the official checkpoints (``qkv``, ``proj``,
``rel_pos_h``, ``rel_pos_w``, ``norm``, ``attention_biases``, ``c``, ``bn``), so internal
refactors of our attention code don't change the baseline.

    model = load_model("vit_t")
    with explicit_baseline(model):          # patched encoder attention + naive upsampling
        Predictor(model).set_image(image)

`python benchmarks/baseline_explicit.py` checks that the baseline reproduces our embedding.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

import sam_core.predictor as predictor_module
from sam_core.modeling.tinyvit_encoder import ConvBN, TinyViTAttention
from sam_core.modeling.vit_encoder import ViTAttention

LOW_RES = 256
INPUT_SIZE = 1024


# ------------------------------------------------------------------------------ ViT (B/L/H)
def _relative_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """(2S-1, C) learned table → (S, S, C) with entry [i, j] = table[i - j + S - 1]."""
    length = 2 * size - 1
    if rel_pos.shape[0] != length:  # trained at another size: resize the table linearly
        rel_pos = F.interpolate(rel_pos.T[None], size=length, mode="linear")[0].T
    idx = torch.arange(size, device=rel_pos.device)
    return rel_pos[idx[:, None] - idx[None, :] + size - 1]


def explicit_vit_attention(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x: (B, H, W, C) tokens of a window (or the whole grid) → (B, H, W, C)."""
    b, h, w, c = x.shape
    heads = self.num_heads
    hd = c // heads
    n = h * w
    qkv = self.qkv(x).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, n, hd).unbind(0)

    logits = (q * hd**-0.5) @ k.transpose(-2, -1)  # (B*heads, N, N), materialised
    table_h = _relative_table(self.rel_pos_h, h).to(q.dtype)
    table_w = _relative_table(self.rel_pos_w, w).to(q.dtype)
    q_grid = q.reshape(b * heads, h, w, hd)
    rel_h = torch.einsum("byxc,ykc->byxk", q_grid, table_h)  # (B*heads, H, W, kH)
    rel_w = torch.einsum("byxc,xkc->byxk", q_grid, table_w)  # (B*heads, H, W, kW)
    logits = logits.view(b * heads, h, w, h, w) + rel_h[..., :, None] + rel_w[..., None, :]
    attn = logits.view(b * heads, n, n).softmax(dim=-1)
    out = (attn @ v).view(b, heads, h, w, hd).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
    return self.proj(out)


# --------------------------------------------------------------------------- TinyViT (vit_t)
def _offset_bias_index(window: int, device: torch.device) -> torch.Tensor:
    """(N, N) index of the learned bias for each query/key pair: |dy| * window + |dx|."""
    yy, xx = torch.meshgrid(
        torch.arange(window, device=device), torch.arange(window, device=device), indexing="ij"
    )
    yy, xx = yy.flatten(), xx.flatten()
    return (yy[:, None] - yy[None, :]).abs() * window + (xx[:, None] - xx[None, :]).abs()


def explicit_tinyvit_attention(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x: (B, N, C) tokens of B windows, N = window² → (B, N, C)."""
    b, n, _ = x.shape
    heads = self.attention_biases.shape[0]
    hd = self.qkv.out_features // (3 * heads)
    window = math.isqrt(n)
    qkv = self.qkv(self.norm(x)).view(b, n, heads, 3 * hd).permute(0, 2, 1, 3)
    q, k, v = qkv.split(hd, dim=-1)  # per head the checkpoint stores [q | k | v]
    bias = self.attention_biases[:, _offset_bias_index(window, x.device)]  # (heads, N, N)
    logits = (q * hd**-0.5) @ k.transpose(-2, -1) + bias.to(q.dtype)
    attn = logits.softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, heads * hd))


def unfolded_conv_bn(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Convolution, then BatchNorm (eval: running statistics) as a separate pass."""
    return self.bn(self.c(x))


# ----------------------------------------------------------------------------- upsampling
def naive_upsample_logits(low_res_logits: torch.Tensor, geometry) -> torch.Tensor:
    """(..., 256, 256) → (..., H, W): full 1024² pass, crop the padding, resize to original."""
    lead = low_res_logits.shape[:-2]
    x = low_res_logits.float().reshape(1, -1, LOW_RES, LOW_RES)
    x = F.interpolate(x, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    h, w = geometry.input_hw
    x = F.interpolate(x[..., :h, :w], geometry.original_hw, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *geometry.original_hw)


# ------------------------------------------------------------------------------- patching
class PatchReport:
    """How many modules were patched and how often the patched code actually ran."""

    def __init__(self) -> None:
        self.patched = {"vit": 0, "tinyvit": 0, "conv_bn": 0}
        self.calls = {"attention": 0, "upsample": 0}


def _counting(fn, report: PatchReport, key: str):
    def wrapper(*args, **kwargs):
        report.calls[key] += 1
        return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def explicit_baseline(
    model: nn.Module, attention: bool = True, upsampling: bool = True
) -> Iterator[PatchReport]:
    """Within the block, `model`'s encoder (attention, TinyViT conv+BN) and the predictor's
    upsampling are computed the straightforward way.

    Yields a `PatchReport`; check `report.calls` afterwards to be sure the patched code ran
    (a refactor that stops calling these modules would otherwise silently time our own code).
    """
    report = PatchReport()
    patched: list[nn.Module] = []
    if attention:
        for module in model.modules():
            if isinstance(module, ViTAttention):
                fn, key = explicit_vit_attention, "vit"
            elif isinstance(module, TinyViTAttention):
                fn, key = explicit_tinyvit_attention, "tinyvit"
            elif isinstance(module, ConvBN):
                fn, key = unfolded_conv_bn, "conv_bn"
            else:
                continue
            method = types.MethodType(fn, module)
            if key != "conv_bn":
                method = _counting(method, report, "attention")
            module.forward = method
            patched.append(module)
            report.patched[key] += 1
        if not report.patched["vit"] + report.patched["tinyvit"]:
            raise RuntimeError("no ViTAttention/TinyViTAttention modules found to patch")
    original_upsample = predictor_module.upsample_logits
    if upsampling:
        predictor_module.upsample_logits = _counting(naive_upsample_logits, report, "upsample")
    try:
        yield report
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
        predictor_module.upsample_logits = original_upsample


def _self_check() -> None:
    """Baseline embedding == our embedding (vit_t real weights, 1040x1388 nuclei image)."""
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from sam_core import Predictor, load_model

    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    data = Path(os.environ.get("SAMSCOPE_DATA", default))
    image = np.asarray(Image.open(data / "dsb2018_fluo_dev/images/c901794d1a421d52.png"))
    model = load_model("vit_t")
    predictor = Predictor(model)
    ours = predictor.set_image(image).features
    low_ours = predictor.predict(points=[[700, 500]])[0]
    with explicit_baseline(model) as report:
        base = predictor.set_image(image).features
        low_base = predictor.predict(points=[[700, 500]])[0]
    diff = (ours - base).abs().max().item()
    same_masks = (low_ours == low_base).mean()
    print(f"patched {report.patched}, calls {report.calls}")
    print(f"max |ours - baseline| = {diff:.2e}; mask pixels equal: {same_masks:.6f}")
    assert torch.allclose(ours, base, atol=1e-4, rtol=1e-4), diff


if __name__ == "__main__":
    _self_check()
