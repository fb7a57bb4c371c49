"""The instance decoder: SAM's image embedding + a few full-resolution image features → maps.

SAM's embedding has 256 channels on a 64 x 64 grid of tokens over the padded 1024² input, one
token per 16 x 16 input pixels, i.e. 4 x 4 pixels of a 256² image and ~22 x 22 of a 1388-wide
one: too coarse alone for nuclei 8-12 pixels across. So the decoder has two branches:

* tokens: the valid tokens (those covering the image, not the padding) go through 1x1 and 3x3
  convolutions at token resolution, then are sampled bilinearly at every output pixel's
  position (`token_grid`), which keeps the exact geometry of SAM's resize;
* pixels: the normalised image itself through two thin 3x3 convolutions at output resolution;

concatenated and fused by two 3x3 convolutions into three logit maps: foreground, centre and
boundary (`sam_core.instance.targets`). Everything at output resolution is thin (8-24 channels
by default), so a 1024² image costs a fraction of the encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .targets import N_MAPS

EMBED_DIM = 256
TOKEN_PIXELS = 16  # input-frame pixels per token side


@dataclass(frozen=True)
class DecoderConfig:
    """Widths of the decoder (channels). Saved with the weights to rebuild it."""

    token_channels: int = 64
    token_out: int = 16
    pixel_channels: int = 8
    fuse_channels: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


class InstanceDecoder(nn.Module):
    """Maps (tokens, image pixels, where each pixel lies in the token grid) → 3 logit maps."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        c = config or DecoderConfig()
        self.config = c
        self.tokens = nn.Sequential(
            nn.Conv2d(EMBED_DIM, c.token_channels, 1),
            nn.GroupNorm(8, c.token_channels),
            nn.ReLU(inplace=True),
            _conv(c.token_channels, c.token_channels),
            _conv(c.token_channels, c.token_channels),
            nn.Conv2d(c.token_channels, c.token_out, 1),
        )
        self.pixels = nn.Sequential(
            _conv(3, c.pixel_channels), _conv(c.pixel_channels, c.pixel_channels)
        )
        self.fuse = nn.Sequential(
            _conv(c.token_out + c.pixel_channels, c.fuse_channels),
            _conv(c.fuse_channels, c.fuse_channels),
            nn.Conv2d(c.fuse_channels, N_MAPS, 1),
        )

    def token_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 256, th, tw) valid embedding tokens → (B, token_out, th, tw)."""
        return self.tokens(tokens)

    def forward(
        self, tokens: torch.Tensor, pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the maps.

        tokens: (B, 256, th, tw) valid embedding tokens. pixels: (B, 3, H, W) normalised image
        (zero mean, unit variance). rows (H, th) / cols (W, tw): where output pixels lie in
        the token grid (`token_grid`). Returns (B, 3, H, W) logits: foreground, centre,
        boundary.
        """
        sampled = sample_tokens(self.token_features(tokens), rows, cols)
        return self.fuse_sampled(sampled, pixels)

    def fuse_sampled(self, sampled: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(B, token_out, H, W) sampled token features + (B, 3, H, W) pixels → logits."""
        return self.fuse(torch.cat([sampled, self.pixels(pixels)], dim=1))


def sample_tokens(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (B, C, th, tw) token features at output pixels → (B, C, H, W).

    rows: (H, th) and cols: (W, tw) interpolation matrices from `token_weights`; bilinear
    interpolation is separable, so this is two matrix products (fast forward and backward).
    """
    along_cols = torch.matmul(features, cols.t().to(features.dtype))  # (B, C, th, W)
    return torch.matmul(rows.to(features.dtype), along_cols)  # (B, C, H, W)


def token_weights(out_len: int, input_len: int, n_tokens: int) -> torch.Tensor:
    """(out_len, n_tokens) float32 bilinear weights along one axis.

    An output map of `out_len` pixels covers an image axis that SAM resized to `input_len`
    input-frame pixels; output pixel i's centre lies at input-frame (i + 0.5) * input_len /
    out_len, i.e. at token coordinate that / 16 - 0.5 (token centres at integers). Positions
    beyond the first / last token centre take that token (border clamp).
    """
    position = (torch.arange(out_len, dtype=torch.float64) + 0.5) * (input_len / out_len)
    position = (position / TOKEN_PIXELS - 0.5).clamp(0, n_tokens - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=n_tokens - 1)
    frac = position - low
    weights = torch.zeros(out_len, n_tokens, dtype=torch.float64)
    weights[torch.arange(out_len), low] += 1.0 - frac
    weights[torch.arange(out_len), high] += frac
    return weights.float()


def token_grid(
    out_hw: tuple[int, int], input_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (H', th), cols (W', tw)) weights for an output map of `out_hw` pixels covering an
    image SAM resized to `input_hw` (its valid tokens: th = ceil(h / 16), tw = ceil(w / 16))."""
    th = -(-int(input_hw[0]) // TOKEN_PIXELS)
    tw = -(-int(input_hw[1]) // TOKEN_PIXELS)
    return token_weights(out_hw[0], input_hw[0], th), token_weights(out_hw[1], input_hw[1], tw)


def valid_tokens(features: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 256, 64, 64) embedding → (B, 256, th, tw): the tokens covering the resized image
    (th = ceil(h / 16), tw = ceil(w / 16)); the rest covers padding only."""
    th = -(-int(input_hw[0]) // TOKEN_PIXELS)
    tw = -(-int(input_hw[1]) // TOKEN_PIXELS)
    return features[..., :th, :tw]
