"""The image embedding as a value of its own: features plus the geometry to map prompts."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .image_input import ImageGeometry


@dataclass(frozen=True)
class ImageEmbedding:
    """What `Predictor.set_image` computes once per image, reusable for any number of prompts.

    features: (1, 256, 64, 64) float32 image embedding.
    geometry: original (H, W) and resized (h, w) sizes, to map prompts and masks.
    model_name: registry name or checkpoint path of the model that made it; an embedding
        is only valid with that model's prompt encoder and decoder.
    """

    features: torch.Tensor
    geometry: ImageGeometry
    model_name: str

    def __post_init__(self) -> None:
        if self.features.ndim != 4 or tuple(self.features.shape[1:]) != (256, 64, 64):
            raise ValueError(
                f"embedding features must be (1, 256, 64, 64), got {tuple(self.features.shape)}"
            )

    @property
    def original_hw(self) -> tuple[int, int]:
        return self.geometry.original_hw

    def to(self, device: torch.device | str) -> ImageEmbedding:
        """This embedding on `device`: itself when already there (the predictor keys its
        per-image decoder terms by the embedding object, so a copy would recompute them)."""
        features = self.features.to(device)
        return self if features is self.features else replace(self, features=features)
