"""Automatic masks with the real MobileSAM weights: agreement with the official generator,
the cheap re-threshold pass, the near-whole-image filter and tiling across seams."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sam_core import AutomaticMaskGenerator, masks_to_label_image

pytestmark = pytest.mark.slow


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) and (M, H, W) bool → (N, M) IoU."""
    a2 = a.reshape(len(a), -1).astype(np.float32)
    b2 = b.reshape(len(b), -1).astype(np.float32)
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


@pytest.fixture(scope="module")
def reference(shared_dir):
    return np.load(shared_dir / "reference" / "mobilesam_amg16.npz")


@pytest.fixture(scope="module")
def official_comparison(vit_t_model, shared_dir, read_rgb, reference):
    """Our candidates and masks for the two reference images, with the official settings
    (16×16 grid, other parameters default, no near-whole-image filter)."""
    amg = AutomaticMaskGenerator(vit_t_model, points_per_side=16, max_mask_fraction=None)
    results = []
    for name in reference["images"]:
        image = read_rgb(shared_dir / "data" / str(name))
        candidates = amg.compute_candidates(image)
        results.append((image, candidates, amg.select(candidates)))
    return amg, results


def test_agrees_with_the_official_generator(official_comparison, reference):
    _, results = official_comparison
    for i, (image, _, records) in enumerate(results):
        w = image.shape[1]
        official = np.unpackbits(reference[f"masks_{i}"], axis=-1)[..., :w].astype(bool)
        ours = np.stack([r["segmentation"] for r in records])
        iou = _iou_matrix(official, ours)
        assert (iou.max(axis=1) >= 0.9).mean() >= 0.95, f"image {i}: official masks unmatched"
        assert (iou.max(axis=0) >= 0.9).mean() >= 0.95, f"image {i}: our masks unmatched"
        np.testing.assert_allclose(
            sorted(r["predicted_iou"] for r in records),
            sorted(reference[f"iou_{i}"]),
            atol=1e-3,
        )


def test_records_have_the_official_keys_and_consistent_geometry(official_comparison):
    _, results = official_comparison
    image, _, records = results[0]
    assert records, "no masks"
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)
    for r in records:
        assert set(r) == {
            "segmentation",
            "area",
            "bbox",
            "predicted_iou",
            "stability_score",
            "point_coords",
            "crop_box",
        }
        seg = r["segmentation"]
        assert seg.shape == image.shape[:2] and seg.dtype == bool
        ys, xs = np.nonzero(seg)
        assert r["area"] == seg.sum()
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert r["stability_score"] >= 0.95 and r["predicted_iou"] > 0.88


def test_select_rethresholds_without_the_model(official_comparison):
    amg, results = official_comparison
    _, candidates, default_records = results[1]
    strict = amg.select(candidates, pred_iou_thresh=0.97, stability_score_thresh=0.97)
    assert 0 < len(strict) < len(default_records)
    assert all(r["predicted_iou"] > 0.97 and r["stability_score"] >= 0.97 for r in strict)
    loose = amg.select(candidates, pred_iou_thresh=0.7, stability_score_thresh=0.8)
    assert len(loose) > len(default_records)
    with pytest.raises(ValueError, match="floors"):
        amg.select(candidates, pred_iou_thresh=0.2)
    rle = amg.select(candidates, output_mode="coco_rle")
    assert [r["area"] for r in rle] == [r["area"] for r in default_records]
    assert isinstance(rle[0]["segmentation"]["counts"], str)


def test_near_whole_image_masks_are_removed_by_default(official_comparison):
    amg, results = official_comparison
    image, candidates, unfiltered = results[1]  # the nuclei image: background is 98% of it
    area = image.shape[0] * image.shape[1]
    assert max(r["area"] for r in unfiltered) >= 0.95 * area
    filtered = amg.select(candidates, max_mask_fraction=0.95)
    assert filtered and max(r["area"] for r in filtered) < 0.95 * area
    assert len(filtered) == len(unfiltered) - sum(r["area"] >= 0.95 * area for r in unfiltered)


def test_tiled_generation_merges_seams_without_duplicates_or_cuts(
    vit_t_model, shared_dir, read_rgb, official_comparison
):
    """A 256² nuclei image cut into four 128² tiles (48 px halo), with the same point density
    as the untiled 16×16 run: nuclei crossing the seams come out whole and once, and the tiled
    run finds what the untiled run finds."""
    name = "c043d5ac9dd46605"
    image = read_rgb(shared_dir / "data" / "dsb2018_fluo_dev" / "images" / f"{name}.png")
    truth = tifffile.imread(shared_dir / "data" / "dsb2018_fluo_dev" / "labels" / f"{name}.tif")
    tiled = AutomaticMaskGenerator(
        vit_t_model, points_per_side=8, tile_shape=(128, 128), halo=(48, 48)
    )
    assert len(tiled.regions_for(image.shape[:2])) == 4
    records = tiled.generate(image)
    ours = np.stack([r["segmentation"] for r in records])
    iou = _iou_matrix(ours, ours)
    np.fill_diagonal(iou, 0)
    assert iou.max() < 0.7, "the same object came out twice"

    objects = np.stack([truth == k for k in np.unique(truth) if k])
    match = _iou_matrix(objects, ours)
    found = match.max(axis=1) >= 0.5
    amg, results = official_comparison
    untiled = amg.select(results[1][1], max_mask_fraction=0.95)
    untiled_found = _iou_matrix(objects, np.stack([r["segmentation"] for r in untiled])).max(1)
    untiled_found = untiled_found >= 0.5
    assert untiled_found.sum() >= 6
    assert found[untiled_found].mean() >= 0.9, "tiling lost nuclei the untiled run finds"
    on_seam = np.array(
        [(o[:, 127].any() and o[:, 128].any()) or (o[127].any() and o[128].any()) for o in objects]
    )
    assert (on_seam & untiled_found).any(), "test image should have found nuclei on a seam"
    assert found[on_seam & untiled_found].all(), "a nucleus on a seam was lost or cut in two"
    labels = masks_to_label_image(records, image.shape[:2])
    assert labels.max() == len(records)


class _Stop(Exception):
    pass


def test_bad_input_and_empty_results(vit_t_model):
    from sam_core import EmbeddingError, ImageError, Predictor

    predictor = Predictor(vit_t_model)
    amg = AutomaticMaskGenerator(predictor, points_per_side=4)
    blank = np.zeros((96, 128), dtype=np.uint16)
    records = amg.generate(blank)
    assert records == [] or all(r["area"] < 0.95 * 96 * 128 for r in records)
    assert masks_to_label_image([], (96, 128)).max() == 0
    with pytest.raises(ImageError):
        amg.generate(np.zeros((5, 64, 64, 7), np.uint8))  # a stack where one image is expected
    with pytest.raises(ImageError):
        amg.generate(np.full((64, 64), np.nan, np.float32))
    other = predictor.compute_embedding(np.zeros((64, 80), np.uint8))
    with pytest.raises(EmbeddingError, match="64, 80"):
        amg.compute_candidates(blank, embedding=other)

    calls = []

    def stop_after_embedding(done, total):
        calls.append((done, total))
        raise _Stop

    with pytest.raises(_Stop):
        amg.compute_candidates(blank, progress=stop_after_embedding)
    assert calls == [(1, 2)]  # one embedding + one batch of 16 points; stopped after the first


def test_cached_tiled_embedding_gives_the_same_candidates(vit_t_model, nuclei_dir, read_rgb):
    from sam_core import Predictor
    from sam_core.tiling import compute_tiled_embedding

    image = read_rgb(nuclei_dir / "images" / "c043d5ac9dd46605.png")
    predictor = Predictor(vit_t_model)
    amg = AutomaticMaskGenerator(predictor, points_per_side=8, tile_shape=(128, 256), halo=(48, 0))
    layout = amg.tile_layout(image.shape[:2])
    assert len(layout) == 2
    tiled = compute_tiled_embedding(predictor, image, layout)
    fresh = amg.compute_candidates(image)
    cached = amg.compute_candidates(image, embedding=tiled)
    assert len(fresh) == len(cached) > 0
    np.testing.assert_array_equal(fresh.boxes_xyxy, cached.boxes_xyxy)
    np.testing.assert_allclose(fresh.predicted_iou, cached.predicted_iou, atol=1e-5)
    with pytest.raises(Exception, match="TiledEmbedding"):
        amg.compute_candidates(image, embedding=tiled.embeddings[0])
