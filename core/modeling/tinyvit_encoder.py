"""TinyViT image encoder of MobileSAM (`vit_t`).

MobileSAM distils SAM's ViT-H encoder into a 5M-parameter TinyViT: a convolutional stem and
MBConv stage at 1/4 resolution, then three stages of windowed attention (with learned
per-offset biases) each followed by a depthwise "local" conv. The last downsampling keeps the
64x64 grid (stride 1) so the output matches SAM's 256 x 64 x 64 embedding. State-dict keys
match the MobileSAM checkpoint (including the unused ImageNet head, so it loads strictly).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .common import encoder_neck, fused_conv2d, fused_linear, linear_gelu


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (keys `c`, `bn`).

    In eval mode the BatchNorm is folded into the convolution (one pass over the activations
    instead of two); the folded weights are cached and rebuilt whenever a parameter or running
    statistic changes (loading weights, fine-tuning).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            OrderedDict(
                c=nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                bn=nn.BatchNorm2d(out_ch),
            )
        )
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def _sources(self) -> tuple[torch.Tensor, ...]:
        bn = self.bn
        return (self.c.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)

    def _folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        sources = self._sources()
        # Inference-mode tensors may not enter autograd: a cache made under inference_mode
        # is rebuilt for a later pass with autograd (e.g. an eval-mode encoder being tuned).
        versions = ((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        key = (torch.is_inference_mode_enabled(), *versions)
        if self._folded is None or self._folded[0] != key:
            conv_w, gamma, beta, mean, var = (t.detach() for t in sources)
            scale = gamma / torch.sqrt(var + self.bn.eps)
            weight = conv_w * scale.reshape(-1, 1, 1, 1)
            self._folded = (key, weight, beta - mean * scale)
        return self._folded[1], self._folded[2]

    def forward(
        self, x: torch.Tensor, gelu: bool = False, add: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, C, H, W) → BN(conv(x)) [+ add] [then GELU]; in eval mode one fused kernel
        with the folded weights where possible (`common.fused_conv2d`)."""
        if self.training:
            out = super().forward(x)
            out = out if add is None else out + add
            return F.gelu(out) if gelu else out
        weight, bias = self._folded_weights()
        c = self.c
        return fused_conv2d(x, weight, bias, c.stride, c.padding, c.groups, gelu, add)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs: (B, 3, H, W) → (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq[2](self.seq[0](x, gelu=True))  # seq[1] is that GELU


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand → 3x3 depthwise → 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, C, H, W)."""
        y = self.conv2(self.conv1(x, gelu=True), gelu=True)
        return self.conv3(y, gelu=True, add=x)


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 conv → depthwise 3x3 (stride 1 or 2) → 1x1 conv."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, C', H', W')."""
        return self.conv3(self.conv2(self.conv1(x, gelu=True), gelu=True))


def _offset_index(window: int) -> torch.Tensor:
    """(N, N) index of |dy|, |dx| offsets between the N = window² positions of a window.

    Offsets are numbered in order of first appearance over row-major pairs, which for a square
    window is |dy| * window + |dx|.
    """
    points = list(itertools.product(range(window), range(window)))
    table: dict[tuple[int, int], int] = {}
    index = []
    for p in points:
        for q in points:
            offset = (abs(p[0] - q[0]), abs(p[1] - q[1]))
            index.append(table.setdefault(offset, len(table)))
    return torch.tensor(index, dtype=torch.long).view(len(points), len(points))


class TinyViTAttention(nn.Module):
    """Window self-attention with a learned bias per head and (|dy|, |dx|) offset."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * self.head_dim * num_heads)
        self.proj = nn.Linear(self.head_dim * num_heads, dim)
        index = _offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, int(index.max()) + 1))
        self.register_buffer("attention_bias_idxs", index, persistent=False)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    def _bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(1, heads, N, N) additive attention bias; in eval mode gathered once and reused
        until the table, its dtype or device changes (loading weights, `.to`)."""
        table = self.attention_biases
        if self.training or torch.is_grad_enabled():
            return table[:, self.attention_bias_idxs].to(dtype)[None]
        key = (table.data_ptr(), table._version, table.device, dtype)
        if self._bias_cache is None or self._bias_cache[0] != key:
            bias = table.detach()[:, self.attention_bias_idxs].to(dtype)[None].contiguous()
            self._bias_cache = (key, bias)
        return self._bias_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens of B windows, N = window² → (B, N, C)."""
        b, n, _ = x.shape
        qkv = fused_linear(self.norm(x), self.qkv).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)  # per-head [q | k | v]
        # A 4-D mask lets SDPA use its fused CPU kernel (a 3-D one falls back to the slow path).
        bias = self._bias(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return fused_linear(out.transpose(1, 2).reshape(b, n, -1), self.proj)


class TinyViTMlp(nn.Module):
    """LayerNorm → Linear → GELU → Linear (keys `norm`, `fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(linear_gelu(self.norm(x), self.fc1), self.fc2)


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), a depthwise 3x3 conv over the grid, the MLP (residual)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = TinyViTAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = TinyViTMlp(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C); zero-pads to whole windows and crops back."""
        b, h, w, c = x.shape
        win = self.window
        if h == win and w == win:
            return self.attn(x.reshape(b, h * w, c)).view(b, h, w, c)
        pad_h, pad_w = (-h) % win, (-w) % win
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        nh, nw = hp // win, wp // win
        windows = x.view(b, nh, win, nw, win, c).transpose(2, 3).reshape(-1, win * win, c)
        out = self.attn(windows).view(b, nh, nw, win, win, c).transpose(2, 3).reshape(b, hp, wp, c)
        return out[:, :h, :w] if (pad_h or pad_w) else out

    def _attention_residual_inference(self, x: torch.Tensor) -> torch.Tensor:
        """x + windowed attention(x), (B, H, W, C) → (B, H, W, C), without autograd.

        The same numbers as `x + _windowed_attention(x)` with two passes over the activations
        fewer: the grid is copied straight into the zero-padded window batch (no padded grid
        first), and the residual sum is written straight from the windows (no un-windowed,
        cropped copy first). Both go block by block: whole windows, then the partial last
        row / column of windows.
        """
        b, h, w, c = x.shape
        win = self.window
        nh, nw = -(-h // win), -(-w // win)
        windows = x.new_empty(b, nh, nw, win, win, c)
        padded = windows.permute(0, 1, 3, 2, 4, 5)  # (B, nh, win, nw, win, C) = padded grid
        rest_h, rest_w = h - (nh - 1) * win, w - (nw - 1) * win
        if rest_h < win:
            padded[:, -1, rest_h:].zero_()
        if rest_w < win:
            padded[:, :, :, -1, rest_w:].zero_()
        blocks = [(r, k) for r in _window_blocks(h, win) for k in _window_blocks(w, win)]
        for (ys, iy, wy), (xs, ix, wx) in blocks:
            target = padded[:, iy, wy, ix, wx]  # (B, ny, wy, nx, wx, C)
            target.copy_(
                x[:, ys, xs].unflatten(1, target.shape[1:3]).unflatten(3, target.shape[3:5])
            )
        out = self.attn(windows.view(-1, win * win, c)).view(b, nh, nw, win, win, c)
        out = out.permute(0, 1, 3, 2, 4, 5)
        result = torch.empty_like(x)
        for (ys, iy, wy), (xs, ix, wx) in blocks:
            part = out[:, iy, wy, ix, wx]
            grid_shape = (part.shape[1:3], part.shape[3:5])
            torch.add(
                x[:, ys, xs].unflatten(1, grid_shape[0]).unflatten(3, grid_shape[1]),
                part,
                out=result[:, ys, xs].unflatten(1, grid_shape[0]).unflatten(3, grid_shape[1]),
            )
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) → (B, H, W, C)."""
        if torch.is_grad_enabled() or (x.shape[1] == self.window and x.shape[2] == self.window):
            x = x + self._windowed_attention(x)
        else:
            x = self._attention_residual_inference(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # not residual
        return self.mlp(x).add_(x)


def _window_blocks(size: int, window: int) -> list[tuple[slice, slice, slice]]:
    """Split a grid axis of `size` cells into the whole windows and the partial last one.

    Returns [(cells of the grid, window indices, cells within each window)], one entry per
    part present: e.g. size 64, window 14 → 4 whole windows (cells 0-55) and window 4's
    first 8 cells (cells 56-63).
    """
    full, rest = divmod(size, window)
    blocks = []
    if full:
        blocks.append((slice(0, full * window), slice(0, full), slice(0, window)))
    if rest:
        blocks.append((slice(full * window, size), slice(full, full + 1), slice(0, rest)))
    return blocks


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then downsampling; (B, C, H, W) → (B, C', H', W')."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..3: TinyViT blocks on a (B, C, H, W) grid, then optional downsampling."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTImageEncoder(nn.Module):
    """MobileSAM encoder: (B, 3, 1024, 1024) normalised, padded image → (B, 256, 64, 64)."""

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        downsample_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        img_size: int = 1024,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        stages: list[nn.Module] = [
            ConvStage(
                embed_dims[0], embed_dims[1], depths[0], mbconv_expand_ratio, downsample_strides[0]
            )
        ]
        for i in range(1, len(depths)):
            last = i == len(depths) - 1
            stages.append(
                AttentionStage(
                    embed_dims[i],
                    None if last else embed_dims[i + 1],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    1 if last else downsample_strides[i],
                )
            )
        self.layers = nn.ModuleList(stages)
        # ImageNet classifier of the distillation backbone: unused, kept for strict loading.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = encoder_neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last throughout: convs run without layout reorders, and the attention
        # stages' (B, H, W, C) views of the grid are free instead of copies.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for stage in self.layers:
            x = stage(x)
        return self.neck(x).contiguous()
