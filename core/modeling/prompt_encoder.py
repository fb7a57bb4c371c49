"""Prompt encoder (paper appendix A, "Prompt encoder").

Sparse prompts (points and box corners) become 256-d tokens: a random-Fourier positional
encoding of the location plus a learned embedding of the prompt's kind (negative point,
positive point, box top-left, box bottom-right, or padding). A dense prompt (a mask, usually
the previous prediction's low-resolution logits) is downscaled 4x by convolutions and added to
the image embedding; without one, a learned "no mask" embedding is added at every position.

All coordinates are (x, y) pixels in the model's 1024 x 1024 input frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

# Labels of sparse tokens. Points use 0/1 as in the official API; boxes are two corner tokens.
PAD_LABEL = -1
NEGATIVE_LABEL = 0
POSITIVE_LABEL = 1
BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3


class RandomFourierEncoding(nn.Module):
    """Positional encoding with a fixed Gaussian projection (Tancik et al.), 2 → 2*F dims."""

    def __init__(self, num_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn(2, num_feats)
        )

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        """coords01: (..., 2) xy normalised to [0, 1] → (..., 2F) [sin | cos]."""
        proj = (2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix.to(coords01.dtype)
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (H, W) grid → (2F, H, W)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
        return self.encode(xy).permute(2, 0, 1)

    def points(self, coords_xy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """coords_xy: (..., 2) pixels in an (H, W) frame → (..., 2F)."""
        h, w = image_size
        norm = torch.tensor([w, h], dtype=torch.float32, device=coords_xy.device)
        return self.encode(coords_xy.float() / norm)


class PromptEncoder(nn.Module):
    """Encodes points, boxes and masks for the mask decoder."""

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_positional_encoding(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid → (1, C, 64, 64)."""
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def _embed_sparse(self, coords_xy: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords_xy: (B, N, 2) input-frame pixels; labels: (B, N) in -1..3 → (B, N, C)."""
        # +0.5: a prompt at pixel (x, y) means that pixel's centre.
        tokens = self.pe_layer.points(coords_xy + 0.5, self.input_image_size)
        kind = torch.stack([e.weight[0] for e in self.point_embeddings])  # (4, C)
        kind = torch.cat([self.not_a_point_embed.weight, kind]).to(tokens.dtype)  # (5, C)
        is_pad = (labels == PAD_LABEL)[..., None]
        tokens = torch.where(is_pad, torch.zeros_like(tokens), tokens)
        return tokens + kind[(labels + 1).clamp(0, 4)]

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of B prompts.

        points: ((B, N, 2) xy input-frame pixels, (B, N) labels 1 positive / 0 negative / -1 pad)
        boxes: (B, 4) x0, y0, x1, y1 input-frame pixels
        masks: (B, 1, 256, 256) mask logits
        Returns sparse (B, T, C) tokens and dense (B, C, 64, 64) embeddings; without masks
        the dense embedding is the same for all prompts and returned once, (1, C, 64, 64).
        """
        batch = self._batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        coords_parts: list[torch.Tensor] = []
        label_parts: list[torch.Tensor] = []
        if points is not None:
            coords, labels = points
            coords_parts.append(coords.float())
            label_parts.append(labels.long())
            if boxes is None:
                # Without a box, a padding token marks the end of the prompt (as SAM was trained).
                coords_parts.append(torch.zeros(batch, 1, 2, device=device))
                label_parts.append(torch.full((batch, 1), PAD_LABEL, device=device))
        if boxes is not None:
            coords_parts.append(boxes.float().reshape(batch, 2, 2))
            corner = torch.tensor([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], device=device)
            label_parts.append(corner.expand(batch, 2))
        if coords_parts:
            sparse = self._embed_sparse(torch.cat(coords_parts, 1), torch.cat(label_parts, 1))
        else:
            sparse = torch.empty(batch, 0, self.embed_dim, device=device)

        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return sparse, dense

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1
