"""Mask decoder (paper appendix A, "Lightweight mask decoder").

Output tokens (one IoU token, four mask tokens: one for single-mask output, three for the
ambiguity-aware multi-mask output) are prepended to the prompt tokens and pass through the
two-way transformer with the image embedding. The image embedding is then upscaled 4x by two
transposed convolutions, and each mask token's MLP output gives, by a dot product per pixel,
one low-resolution (256 x 256) mask; the IoU token's MLP predicts each mask's IoU.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .two_way_transformer import SharedImageSide, TwoWayTransformer


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(embedding_dim=transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompts: torch.Tensor,
        dense_prompts: torch.Tensor,
        multimask: bool,
        shared: SharedImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts on one image.

        image_embedding: (1, C, 64, 64) or (B, C, 64, 64); image_pe: (1, C, 64, 64)
        sparse_prompts: (B, T, C); dense_prompts: (B, C, 64, 64), or (1, C, 64, 64) when no
            prompt has a mask input (then the image side is shared by the whole batch)
        shared: from `share_image_side` for this image and the "no mask" dense prompt; only
            valid when `dense_prompts` is that (1, C, 64, 64) embedding.
        Returns low-res mask logits (B, M, 256, 256) and predicted IoU (B, M), with M = 3 if
        `multimask` else 1.
        """
        logits, iou = self.predict_all(
            image_embedding, image_pe, sparse_prompts, dense_prompts, shared
        )
        selected = self.output_slice(multimask)
        return logits[:, selected], iou[:, selected]

    def predict_all(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompts: torch.Tensor,
        dense_prompts: torch.Tensor,
        shared: SharedImageSide | None = None,
        return_iou_token: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """All four masks: (B, 4, 256, 256) logits and (B, 4) IoU; index 0 is the single mask.

        return_iou_token: also return the (B, C) IoU token that the IoU head reads (training
        uses it to train the head on its own).
        """
        batch = sparse_prompts.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(batch, -1, -1).to(sparse_prompts.dtype)
        tokens = torch.cat([output_tokens, sparse_prompts], dim=1)

        image = None if shared is not None else image_embedding + dense_prompts
        hidden_tokens, image_tokens = self.transformer(image, image_pe, tokens, shared)
        iou_token_out = hidden_tokens[:, 0]
        mask_tokens_out = hidden_tokens[:, 1 : 1 + self.num_mask_tokens]

        b, c, h, w = image_tokens.shape[0], *image_embedding.shape[1:]
        # (B, HW, C) tokens are a channels-last (B, C, H, W) grid already: no copy, and the
        # transposed convolutions run channels-last without layout reorders.
        grid = image_tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
        upscaled = self.output_upscaling(grid)  # (B, C/8, 4H, 4W), channels-last
        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, 4, C/8)
        b, c8, uh, uw = upscaled.shape
        pixels = upscaled.permute(0, 2, 3, 1).reshape(b, uh * uw, c8)  # free for channels-last
        logits = (hyper @ pixels.transpose(1, 2)).reshape(b, -1, uh, uw)  # no transposed copy
        iou = self.iou_prediction_head(iou_token_out)
        return (logits, iou, iou_token_out) if return_iou_token else (logits, iou)

    @staticmethod
    def output_slice(multimask: bool) -> slice:
        """Which of `predict_all`'s four outputs `forward` returns."""
        return slice(1, None) if multimask else slice(0, 1)

    def share_image_side(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, no_mask_dense: torch.Tensor
    ) -> SharedImageSide:
        """Per-image decoder work shared by all prompts without a mask input.

        image_embedding: (1, C, 64, 64); no_mask_dense: the prompt encoder's (1, C, 64, 64)
        dense embedding for "no mask".
        """
        return self.transformer.share_image_side(image_embedding + no_mask_dense, image_pe)


__all__ = ["MaskDecoder"]
