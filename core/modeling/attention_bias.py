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


def rel_pos_terms(
    q_grid: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and column parts of the bias for every query, before they are broadcast.

    q_grid: (B, heads, H, W, C) queries before the 1/sqrt(C) scaling.
    table_h: (H, H, C), table_w: (W, W, C) from `relative_position_table`.
    Returns (B, heads, H, W, kH) = q · R_h[y - ky] and (B, heads, H, W, kW) = q · R_w[x - kx],
    both contiguous. Each is one batched matmul over the whole grid (batched by query row,
    resp. column), so a chunked caller pays no per-chunk einsum and layout copies.
    """
    b, n_heads, h, w, c = q_grid.shape
    by_row = q_grid.permute(2, 0, 1, 3, 4).reshape(h, b * n_heads * w, c)
    bias_h = torch.bmm(by_row, table_h.transpose(1, 2))  # (H, B*heads*W, kH)
    bias_h = bias_h.view(h, b, n_heads, w, h).permute(1, 2, 0, 3, 4).contiguous()
    by_col = q_grid.permute(3, 0, 1, 2, 4).reshape(w, b * n_heads * h, c)
    bias_w = torch.bmm(by_col, table_w.transpose(1, 2))  # (W, B*heads*H, kW)
    bias_w = bias_w.view(w, b, n_heads, h, w).permute(1, 2, 3, 0, 4).contiguous()
    return bias_h, bias_w


def broadcast_rel_pos_bias(
    bias_h: torch.Tensor, bias_w: torch.Tensor, rows: slice, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive attention bias for the queries in grid rows `rows`, from `rel_pos_terms`.

    Returns (B, heads, R*W, H*W) for the R rows, keys in row-major (y, x) order, written into
    `out` (contiguous, reused across calls to avoid large fresh allocations) when given.
    """
    b, n_heads, _, w, kh = bias_h.shape
    kw = bias_w.shape[-1]
    part_h, part_w = bias_h[:, :, rows], bias_w[:, :, rows]
    r = part_h.shape[2]
    if out is None:
        out = bias_h.new_empty(b, n_heads, r * w, kh * kw)
    torch.add(part_h[..., :, None], part_w[..., None, :], out=out.view(b, n_heads, r, w, kh, kw))
    return out


def decomposed_rel_pos_bias(
    q_grid: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    rows: slice,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive attention bias (B, heads, R*W, H*W) for the queries in grid rows `rows`.

    q_grid: (B, heads, H, W, C) queries before the 1/sqrt(C) scaling; tables as in
    `rel_pos_terms`. For several row chunks, call `rel_pos_terms` once and
    `broadcast_rel_pos_bias` per chunk instead.
    """
    bias_h, bias_w = rel_pos_terms(q_grid[:, :, rows], table_h[rows], table_w)
    return broadcast_rel_pos_bias(bias_h, bias_w, slice(None), out)
