"""Running a trained decoder on an image: probability maps, whole or tile by tile.

    maps = predict_maps(decoder, embedding, plane, channels, normalization)   # (3, H, W)

`embedding` is what `Session.embed` returns for the plane: an `ImageEmbedding`, or a
`TiledEmbedding` for planes above the session's `max_side`. Tiled planes: the decoder runs on
each tile's outer box (inner box + halo, the tile SAM embedded) and only the inner box of its
maps is kept; the inner boxes partition the image, so the stitched maps are seamless up to
what the halo hides, and ONE watershed then runs on the whole plane (no per-tile objects to
merge at seams). Pixels of a tile are normalised as `sam_core.tiling.TileSource` does (one
intensity range for the whole plane) and standardised per tile.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..embedding import ImageEmbedding
from ..tiling import TiledEmbedding, TileSource
from .checkpoint import LoadedDecoder
from .network import token_grid, valid_tokens
from .pixels import decoder_pixels


@torch.inference_mode()
def maps_for_embedding(
    decoder: LoadedDecoder, embedding: ImageEmbedding, pixels: torch.Tensor
) -> np.ndarray:
    """(3, H, W) float32 probabilities for one embedded image.

    embedding: SAM's embedding of an (H, W) image. pixels: (3, H', W') from `decoder_pixels`
    of that same image (H', W' its working shape). Maps come back at (H, W).
    """
    network = decoder.network
    device = next(network.parameters()).device
    geometry = embedding.geometry
    out_hw = tuple(pixels.shape[-2:])
    tokens = valid_tokens(embedding.features, geometry.input_hw).to(device)
    rows, cols = token_grid(out_hw, geometry.input_hw)
    logits = network(tokens, pixels[None].to(device), rows.to(device), cols.to(device))
    probs = torch.sigmoid(logits.float())
    if out_hw != tuple(geometry.original_hw):
        probs = F.interpolate(probs, size=geometry.original_hw, mode="bilinear")
    return probs[0].cpu().numpy()


def predict_maps(
    decoder: LoadedDecoder,
    embedding: ImageEmbedding | TiledEmbedding,
    plane: np.ndarray,
    channels=None,
    normalization: str = "auto",
) -> np.ndarray:
    """(3, H, W) float32 foreground / centre / boundary probabilities of an (H, W[, C]) plane."""
    if isinstance(embedding, ImageEmbedding):
        pixels = decoder_pixels(plane, channels, normalization, decoder.work_side)
        return maps_for_embedding(decoder, embedding, pixels)
    layout = embedding.layout
    source = TileSource(plane, channels, normalization)
    out = np.zeros((3, *layout.image_hw), dtype=np.float32)
    for tile, tile_embedding in zip(layout.tiles, embedding.embeddings, strict=True):
        part, part_channels, part_norm = source.pixels(tile)
        pixels = decoder_pixels(part, part_channels, part_norm, decoder.work_side)
        maps = maps_for_embedding(decoder, tile_embedding, pixels)
        y0, x0, y1, x1 = tile.inner
        oy, ox = tile.outer[0], tile.outer[1]
        out[:, y0:y1, x0:x1] = maps[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return out
