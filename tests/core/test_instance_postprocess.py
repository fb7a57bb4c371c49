"""Instance decoder post-processing, targets, metrics and network shapes: no SAM weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_core.instance import (
    DecoderConfig,
    InstanceDecoder,
    InstanceThresholds,
    instance_targets,
    maps_to_labels,
    segmentation_accuracy,
)
from sam_core.instance.metrics import iou_matrix
from sam_core.instance.network import sample_tokens, token_grid, valid_tokens


def _two_touching_discs(shape=(64, 96), r=14) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    centres = [(32, 30), (32, 30 + 2 * r - 2)]  # overlap by 2 px: the discs touch
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i
    return labels


def test_two_touching_discs_become_two_objects():
    truth = _two_touching_discs()
    assert len(np.unique(truth[truth > 0])) == 2
    foreground = truth > 0
    from scipy import ndimage

    assert ndimage.label(foreground)[1] == 1  # one blob: a threshold alone can't split it
    labels = maps_to_labels(instance_targets(truth))
    assert labels.max() == 2
    assert iou_matrix(truth, labels).max(axis=1).min() > 0.95
    assert segmentation_accuracy(truth, labels) > 0.9


def test_empty_maps_give_no_objects():
    assert maps_to_labels(np.zeros((3, 40, 50), np.float32)).max() == 0
    noisy = np.random.default_rng(0).uniform(0, 0.3, (3, 40, 50)).astype(np.float32)
    assert maps_to_labels(noisy).max() == 0


def test_foreground_without_seed_is_one_object_and_small_ones_drop():
    maps = np.zeros((3, 30, 30), np.float32)
    maps[0, 5:15, 5:15] = 0.9  # foreground, no seed (centre and boundary maps 0)
    maps[0, 20:22, 20:22] = 0.9  # 4 px: below min_area
    labels = maps_to_labels(maps, InstanceThresholds(min_area=8))
    assert labels.max() == 1 and (labels == 1).sum() == 100


def test_targets_are_normalised_per_object():
    truth = _two_touching_discs()
    t = instance_targets(truth)
    assert t.shape == (3, *truth.shape) and t.dtype == np.float32
    for i in (1, 2):
        inside = truth == i
        assert np.isclose(t[1][inside].max(), 1.0) and np.isclose(t[2][inside].max(), 1.0)
    assert not t[:, truth == 0].any()


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="foreground"):
        InstanceThresholds(foreground=1.5)


def test_decoder_shapes_and_token_geometry():
    net = InstanceDecoder(DecoderConfig(token_channels=16, token_out=8, pixel_channels=4))
    features = torch.randn(1, 256, 64, 64)
    tokens = valid_tokens(features, (819, 1024))  # a 256 x 320 image resized by SAM
    assert tokens.shape == (1, 256, 52, 64)
    rows, cols = token_grid((256, 320), (819, 1024))
    assert rows.shape == (256, 52) and cols.shape == (320, 64)
    assert torch.allclose(rows.sum(1), torch.ones(256)) and torch.allclose(
        cols.sum(1), torch.ones(320)
    )
    # column 160 of 320 starts the input frame's column 512 = between tokens 31 and 32: its
    # centre (512 + 1.6) / 16 - 0.5 = 31.6 -> 40 % token 31, 60 % token 32
    assert torch.allclose(cols[160, 31:33], torch.tensor([0.4, 0.6]), atol=1e-4)
    out = net(tokens, torch.randn(1, 3, 256, 320), rows, cols)
    assert out.shape == (1, 3, 256, 320)


def test_token_sampling_is_bilinear_interpolation():
    """A linear ramp over the tokens samples to the same ramp at pixel centres."""
    ramp = torch.arange(8, dtype=torch.float32).repeat(4, 1)[None, None]  # (1, 1, 4, 8) by column
    rows, cols = token_grid((16, 32), (64, 128))  # 4 px per token
    sampled = sample_tokens(ramp, rows, cols)[0, 0]
    expected = ((torch.arange(32) + 0.5) / 4 - 0.5).clamp(0, 7)
    assert torch.allclose(sampled[5], expected, atol=1e-5)


def test_tiled_maps_keep_each_tiles_inner_box():
    """A tiled plane: every tile's decoder output, cut to its inner box, lands in place."""
    from sam_core.embedding import ImageEmbedding
    from sam_core.image_input import ImageGeometry
    from sam_core.instance import LoadedDecoder, predict_maps
    from sam_core.instance.inference import maps_for_embedding
    from sam_core.instance.pixels import decoder_pixels
    from sam_core.tiling import TiledEmbedding, TileLayout

    torch.manual_seed(0)
    decoder = LoadedDecoder(InstanceDecoder().eval(), "0" * 64, "test")
    plane = np.random.default_rng(1).integers(0, 255, (300, 500), dtype=np.uint8)
    layout = TileLayout.for_shape((300, 500), tile_shape=(150, 256), halo=(32, 32))
    embeddings = tuple(
        ImageEmbedding(torch.randn(1, 256, 64, 64), ImageGeometry.for_shape(tile.outer_hw), "test")
        for tile in layout.tiles
    )
    maps = predict_maps(decoder, TiledEmbedding(layout, embeddings, "test"), plane)
    assert maps.shape == (3, 300, 500) and maps.min() >= 0 and maps.max() <= 1
    tile, embedding = layout.tiles[3], embeddings[3]
    oy0, ox0, oy1, ox1 = tile.outer
    alone = maps_for_embedding(decoder, embedding, decoder_pixels(plane[oy0:oy1, ox0:ox1]))
    y0, x0, y1, x1 = tile.inner
    np.testing.assert_allclose(
        maps[:, y0:y1, x0:x1], alone[:, y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0], atol=1e-6
    )
