"""Decomposed relative-position biases for the ViT encoder's attention.

The ViT encoder (paper appendix A, following MViTv2) adds to each attention logit a bias that
depends on the query's content and the query-key offset, split into a row and a column part:

    bias[(y, x), (ky, kx)] = q[y, x] · R_h[y - ky] + q[y, x] · R_w[x - kx]

with learned tables R_h, R_w of shape (2S-1) x head_dim. We build this bias as an additive
mask for `scaled_dot_product_attention` instead of materialising the logits ourselves.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def relative_position_table(rel_pos: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Gather the learned table into a (q_size, k_size, C) lookup of offsets q - k.

    rel_pos: (L, C) learned table, L = 2 * max(q_size, k_size) - 1 when trained at this size;
    otherwise it is linearly resized to that length (e.g. a model run at another resolution).
    """
    needed = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != needed:
        rel_pos = F.interpolate(rel_pos.T[None], size=needed, mode="linear")[0].T
    # Offsets are scaled when q and k differ in length, so both span the same range.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[offsets.long()]


def decomposed_rel_pos_bias(
    q_grid: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    rows: slice,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive attention bias for the queries in grid rows `rows`.

    q_grid: (B, heads, H, W, C) queries before the 1/sqrt(C) scaling.
    table_h: (H, H, C), table_w: (W, W, C) from `relative_position_table`.
    Returns (B, heads, R*W, H*W) for the R rows, keys in row-major (y, x) order, written into
    `out` (contiguous, reused across calls to avoid large fresh allocations) when given.
    """
    b, n_heads, h, w, _ = q_grid.shape
    q_rows = q_grid[:, :, rows]
    r = q_rows.shape[2]
    bias_h = torch.einsum("bnyxc,ykc->bnyxk", q_rows, table_h[rows])  # (B, heads, R, W, kH)
    bias_w = torch.einsum("bnyxc,xkc->bnyxk", q_rows, table_w)  # (B, heads, R, W, kW)
    if out is None:
        out = q_grid.new_empty(b, n_heads, r * w, h * w)
    torch.add(bias_h[..., :, None], bias_w[..., None, :], out=out.view(b, n_heads, r, w, h, w))
    return out
