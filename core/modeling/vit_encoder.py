"""ViT image encoder of SAM (ViT-B/L/H), paper appendix A.

An MAE-pretrained ViT on 16x16 patches of the 1024x1024 padded input: most blocks attend
within 14x14 windows, a few ("global") blocks attend over all 64x64 tokens; every block adds
decomposed relative-position biases. A neck maps the last tokens to a 256 x 64 x 64 embedding.
State-dict keys match the official checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .attention_bias import broadcast_rel_pos_bias, rel_pos_terms, relative_position_table
from .common import FeedForward, encoder_neck

# Upper bound for one chunk of the additive attention bias (bytes). Global attention over 64x64
# tokens needs a 4096 x 4096 bias per head (64 MiB in fp32); building it a few query rows at a
# time into one reused buffer avoids gigabytes of fresh, page-faulting allocations. 64 MiB (5 grid
# rows of ViT-B's 12 heads) measured fastest on a 2-core AVX2 CPU: a ViT-B global block took
# 1.11 s with 32 MiB chunks, 0.97 s with 64 MiB, 0.97 s with 80 MiB.
_MAX_BIAS_BYTES = 64 * 2**20


class ViTAttention(nn.Module):
    """Multi-head self-attention over a token grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, grid_size: int) -> None:
        """grid_size: side of the token grid this block sees (window side or 64 for global)."""
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) token grid → (B, H, W, C)."""
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)

        head_dim = c // self.num_heads
        table_h = relative_position_table(self.rel_pos_h, h, h).to(q.dtype)
        table_w = relative_position_table(self.rel_pos_w, w, w).to(q.dtype)
        q_grid = q.view(b, self.num_heads, h, w, head_dim)
        bias_h, bias_w = rel_pos_terms(q_grid, table_h, table_w)
        bytes_per_row = b * self.num_heads * w * n * q.element_size()
        rows_per_chunk = max(1, min(h, _MAX_BIAS_BYTES // bytes_per_row))
        if rows_per_chunk == h:
            bias = broadcast_rel_pos_bias(bias_h, bias_w, slice(0, h))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            out = torch.empty_like(q)
            buffer = q.new_empty(b, self.num_heads, rows_per_chunk * w, n)
            for y0 in range(0, h, rows_per_chunk):
                y1 = min(h, y0 + rows_per_chunk)
                bias = buffer[:, :, : (y1 - y0) * w]
                broadcast_rel_pos_bias(bias_h, bias_w, slice(y0, y1), out=bias)
                tokens = slice(y0 * w, y1 * w)
                out[:, :, tokens] = F.scaled_dot_product_attention(
                    q[:, :, tokens], k, v, attn_mask=bias
                )
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad a (B, H, W, C) grid to multiples of `window` and cut it into windows.

    Returns (B * nH * nW, window, window, C) and the padded (H, W). Padded tokens are zeros
    and take part in attention unmasked, as in the official model.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nH * nW, window, window, C) → (B, H, W, C)."""
    hp, wp = padded_hw
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return x[:, :h, :w, :].contiguous() if (hp, wp) != (h, w) else x


class ViTBlock(nn.Module):
    """Pre-norm transformer block; windowed attention when `window_size` > 0."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid_size: int
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads, window_size if window_size > 0 else grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) → (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTImageEncoder(nn.Module):
    """SAM's ViT image encoder: (B, 3, 1024, 1024) normalised, padded image → (B, 256, 64, 64)."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: Sequence[int],
        img_size: int = 1024,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                embed_dim,
                num_heads,
                mlp_ratio,
                window_size=0 if i in global_attn_indexes else window_size,
                grid_size=grid,
            )
            for i in range(depth)
        )
        self.neck = encoder_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
