"""Tile layouts, tiled embeddings and prompt routing (sam_core.tiling).

The model tests use one 256² nuclei image split into 2x2 tiles of 128² with a 64-pixel halo,
so each tile embeds a 192² region; the real MobileSAM embeds 5 images in all (4 tiles + the
whole image).
"""

from __future__ import annotations

import numpy as np
import pytest

from sam_core import EmbeddingError, Predictor, PromptError, build_sam
from sam_core.image_input import as_rgb_uint8_or_float
from sam_core.image_io import read_image
from sam_core.tiling import (
    OUTSIDE_LOGIT,
    TiledEmbedding,
    TiledPredictor,
    TileLayout,
    TileSource,
    compute_tiled_embedding,
    needs_tiling,
)

IMAGE = "images/00071198d059ba7f.png"  # in dsb2018_fluo_dev: 256x256 uint8 nuclei


# ------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize(
    "image_hw, tile_shape, halo",
    [
        ((256, 256), (128, 128), (64, 64)),
        ((1000, 2100), (1024, 1024), (256, 256)),
        ((37, 501), (16, 100), (5, 0)),
        ((300, 200), (1024, 1024), (256, 256)),
    ],
)
def test_inner_boxes_partition_the_image_and_outer_boxes_add_the_halo(image_hw, tile_shape, halo):
    layout = TileLayout.for_shape(image_hw, tile_shape, halo)
    h, w = image_hw
    cover = np.zeros(image_hw, np.int32)
    for tile in layout.tiles:
        y0, x0, y1, x1 = tile.inner
        assert 0 < y1 - y0 <= tile_shape[0] and 0 < x1 - x0 <= tile_shape[1]
        cover[y0:y1, x0:x1] += 1
        assert tile.outer == (
            max(0, y0 - halo[0]),
            max(0, x0 - halo[1]),
            min(h, y1 + halo[0]),
            min(w, x1 + halo[1]),
        )
    assert (cover == 1).all()
    rows, cols = layout.grid_shape
    assert rows == -(-h // tile_shape[0]) and cols == -(-w // tile_shape[1])
    assert [t.index for t in layout.tiles] == list(range(len(layout)))


def test_tile_at_returns_the_tile_whose_inner_box_holds_the_pixel():
    layout = TileLayout.for_shape((1000, 2100), (1024, 700), (100, 100))
    rng = np.random.default_rng(0)
    for y, x in zip(rng.integers(0, 1000, 200), rng.integers(0, 2100, 200), strict=True):
        y0, x0, y1, x1 = layout.tile_at(y, x).inner
        assert y0 <= y < y1 and x0 <= x < x1
    assert layout.tile_at(-5, 99999).inner[3] == 2100  # clamped into the image


def test_needs_tiling_above_the_threshold_only():
    assert not needs_tiling((2048, 2048))
    assert needs_tiling((2049, 10))
    assert needs_tiling((100, 3000))
    assert not needs_tiling((3000, 100), max_side=4096)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="tile_shape"):
        TileLayout.for_shape((100, 100), (0, 10))
    with pytest.raises(ValueError, match="halo"):
        TileLayout.for_shape((100, 100), (10, 10), (-1, 0))


def test_non_uint8_tiles_share_one_intensity_mapping():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 300.0, size=(300, 200)).astype(np.uint16)
    image[:150] += 5000  # the top half is much brighter: per-tile percentiles would differ
    layout = TileLayout.for_shape(image.shape, (100, 100), (20, 20))
    source = TileSource(image)
    whole = as_rgb_uint8_or_float(image)[..., 0]  # the mapping of the untiled image
    for tile in layout.tiles:
        pixels, channels, normalization = source.pixels(tile)
        y0, x0, y1, x1 = tile.outer
        assert normalization == "none" and channels is None
        np.testing.assert_allclose(pixels[..., 0], whole[y0:y1, x0:x1], rtol=1e-6, atol=1e-4)


def test_tile_source_refuses_bad_images():
    with pytest.raises(Exception, match="NaN"):
        TileSource(np.full((10, 10), np.nan, np.float32))
    with pytest.raises(Exception, match="dimensions"):
        TileSource(np.zeros((2, 3, 10, 10), np.uint8))


# ---------------------------------------------------------------------- with the real model
@pytest.fixture(scope="module")
def predictor(vit_t_model) -> Predictor:
    return Predictor(vit_t_model, device="cpu")


@pytest.fixture(scope="module")
def image(nuclei_dir) -> np.ndarray:
    return read_image(nuclei_dir / IMAGE)


@pytest.fixture(scope="module")
def tiled(predictor, image):
    layout = TileLayout.for_shape(image.shape, (128, 128), (64, 64))
    calls = []
    tiled = compute_tiled_embedding(predictor, image, layout, progress=lambda d, t: calls.append(d))
    assert calls == [1, 2, 3, 4]
    return tiled


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.slow
def test_each_tile_embedding_is_the_embedding_of_its_outer_box(predictor, image, tiled):
    tile = tiled.layout.tiles[3]
    y0, x0, y1, x1 = tile.outer
    direct = predictor.compute_embedding(np.ascontiguousarray(image[y0:y1, x0:x1]))
    assert tiled.embeddings[3].geometry == direct.geometry
    assert tiled.embeddings[3].original_hw == (192, 192)
    np.testing.assert_array_equal(tiled.embeddings[3].features, direct.features)


@pytest.mark.slow
def test_tiled_prediction_is_the_tile_prediction_pasted_back(predictor, image, tiled):
    tp = TiledPredictor(predictor, tiled)
    point = np.array([[200.0, 180.0]])  # x, y: bottom-right tile (inner rows/cols 128..256)
    tile = tp.tile_for_prompt(point)
    assert tile.index == 3
    masks, scores, low_res = tp.predict(points=point, labels=[1])
    assert (
        masks.shape == (3, 256, 256) and scores.shape == (3,) and low_res.shape[-2:] == (256, 256)
    )
    y0, x0, y1, x1 = tile.outer
    predictor.set_embedding(tiled.embeddings[3])
    crop_masks, crop_scores, _ = predictor.predict(points=point - [x0, y0], labels=[1])
    np.testing.assert_array_equal(masks[:, y0:y1, x0:x1], crop_masks)
    np.testing.assert_array_equal(scores, crop_scores)
    outside = np.ones((256, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert not masks[:, outside].any()
    logits, _, _ = tp.predict(points=point, labels=[1], return_logits=True)
    assert (logits[:, outside] == OUTSIDE_LOGIT).all()
    np.testing.assert_array_equal(logits > 0, masks)


def _nucleus_points(nuclei_dir) -> np.ndarray:
    """(K, 2) xy: the interior-most pixel of every ground-truth nucleus of IMAGE."""
    import tifffile
    from scipy import ndimage

    labels = tifffile.imread(nuclei_dir / IMAGE.replace("images", "labels").replace(".png", ".tif"))
    ids = np.unique(labels)[1:]
    distance = ndimage.distance_transform_edt(np.pad(labels > 0, 1))[1:-1, 1:-1]
    rows_cols = ndimage.maximum_position(distance, labels, ids)
    return np.array([[c, r] for r, c in rows_cols], dtype=np.float64)


@pytest.mark.slow
def test_tiled_masks_agree_with_whole_image_masks_and_batches_route_per_object(
    predictor, image, tiled, nuclei_dir
):
    points = _nucleus_points(nuclei_dir)
    assert len(points) >= 5
    tp = TiledPredictor(predictor, tiled)
    batch = points[:, None, :]  # (K, 1, 2): one object per point
    masks, scores, _ = tp.predict(points=batch, labels=np.ones((len(points), 1)))
    assert masks.shape == (len(points), 3, 256, 256) and scores.shape == (len(points), 3)
    assert len({tp.tile_for_prompt(p).index for p in batch}) >= 2  # really several tiles

    one_masks, one_scores, _ = tp.predict(points=batch[-1], labels=[1])
    np.testing.assert_array_equal(masks[-1], one_masks)
    np.testing.assert_array_equal(scores[-1], one_scores)

    predictor.set_image(image)
    whole_masks, whole_scores, _ = predictor.predict(points=batch, labels=np.ones((len(points), 1)))
    k = np.arange(len(points))
    tiled_best = masks[k, scores.argmax(1)]
    whole_best = whole_masks[k, whole_scores.argmax(1)]
    ious = [_iou(a, b) for a, b in zip(tiled_best, whole_best, strict=True)]
    # the tiles see the nuclei at 1024/192 = 5.3x, the whole image at 4x: masks differ at the
    # rims only
    assert np.median(ious) > 0.8, ious


@pytest.mark.slow
def test_single_tile_layout_gives_exactly_the_plain_predictor_output(predictor, image):
    layout = TileLayout.for_shape(image.shape, (1024, 1024), (256, 256))
    assert len(layout) == 1 and layout.tiles[0].outer == (0, 0, 256, 256)
    embedding = predictor.set_image(image)
    tp = TiledPredictor(predictor, TiledEmbedding(layout, (embedding,), predictor.model_name))
    box = [40.0, 30.0, 120.0, 90.0]
    masks, scores, logits = tp.predict(box=box, multimask=False)
    predictor.set_embedding(embedding)
    plain = predictor.predict(box=box, multimask=False)
    for ours, theirs in zip((masks, scores, logits), plain, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_prompts_that_do_not_fit_one_tile_are_refused(predictor, tiled):
    tp = TiledPredictor(predictor, tiled)
    with pytest.raises(PromptError, match="outside tile"):
        tp.predict(points=[[10.0, 10.0], [250.0, 250.0]], labels=[1, 1])
    with pytest.raises(PromptError, match="points or a box"):
        tp.predict(mask_input=np.zeros((1, 256, 256), np.float32))
    other = build_sam("vit_t")
    other.name = "untrained_vit_t"
    with pytest.raises(EmbeddingError, match="untrained_vit_t"):
        TiledPredictor(Predictor(other, device="cpu"), tiled)
