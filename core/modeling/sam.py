"""The assembled Segment Anything model and the builders for each architecture.

`SamModel` only wires its three parts; the predictor holds per-image state. Keys of
`SamModel.state_dict()` equal the official checkpoints' keys for every architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tinyvit_encoder import TinyViTImageEncoder
from .vit_encoder import ViTImageEncoder

# ImageNet statistics in 0-255 units, as SAM was trained.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
IMAGE_SIZE = 1024  # side of the square, padded model input (pixels)
EMBEDDING_SIZE = 64  # side of the image embedding grid
LOW_RES_MASK_SIZE = 256  # side of the decoder's mask logits


@dataclass(frozen=True)
class ArchConfig:
    """Hyper-parameters that define one encoder architecture."""

    kind: str  # "vit" or "tiny_vit"
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    global_attn_indexes: tuple[int, ...] = field(default_factory=tuple)


ARCHITECTURES: dict[str, ArchConfig] = {
    "vit_b": ArchConfig("vit", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ArchConfig("vit", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ArchConfig("vit", 1280, 32, 16, (7, 15, 23, 31)),
    "vit_t": ArchConfig("tiny_vit"),
}


class SamModel(nn.Module):
    """Image encoder + prompt encoder + mask decoder."""

    def __init__(self, image_encoder: nn.Module, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.image_encoder = image_encoder
        self.prompt_encoder = PromptEncoder(
            embed_dim=256,
            image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        )
        self.mask_decoder = MaskDecoder(transformer_dim=256)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize_and_pad(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB in 0-255, longest side ≤ 1024 → (B, 3, 1024, 1024) normalised.

        Padding is bottom/right with zeros after normalisation, as the model was trained.
        """
        x = (image - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return nn.functional.pad(x, (0, IMAGE_SIZE - w, 0, IMAGE_SIZE - h))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Embed an image: (B, 3, h, w) RGB 0-255 (resized, not padded) → (B, 256, 64, 64)."""
        return self.image_encoder(self.normalize_and_pad(image))


def build_sam(arch: str) -> SamModel:
    """An untrained SamModel of architecture `arch` ("vit_t", "vit_b", "vit_l", "vit_h")."""
    try:
        config = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None
    if config.kind == "tiny_vit":
        encoder: nn.Module = TinyViTImageEncoder()
    else:
        encoder = ViTImageEncoder(
            config.embed_dim, config.depth, config.num_heads, config.global_attn_indexes
        )
    return SamModel(encoder, arch)
