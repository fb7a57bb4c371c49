"""Evaluation metrics and click placement on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sam_core.errors import ImageError
from sam_core.evaluation.clicks import interior_point, mask_box, next_click, noisy_box
from sam_core.evaluation.coco_metrics import ImageInstances, instance_ap
from sam_core.evaluation.datasets import check_has_objects, check_label_image
from sam_core.evaluation.metrics import batch_iou, clicks_to_reach, mask_iou, summarize_clicks


def _square(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_iou_perfect_empty_and_partial():
    gt = _square(20, 20, 5, 5, 15, 15)  # 100 px
    assert mask_iou(gt, gt) == 1.0
    assert mask_iou(np.zeros_like(gt), gt) == 0.0
    half = _square(20, 20, 5, 5, 15, 10)  # 50 px inside gt
    assert mask_iou(half, gt) == pytest.approx(0.5)
    shifted = _square(20, 20, 5, 10, 15, 20)  # overlaps 50, union 150
    assert mask_iou(shifted, gt) == pytest.approx(50 / 150)
    assert mask_iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    np.testing.assert_allclose(batch_iou(np.stack([gt, half]), gt), [1.0, 0.5])


def test_iou_ignores_band():
    gt = _square(20, 20, 5, 5, 15, 15)
    pred = _square(20, 20, 4, 4, 16, 16)  # one-pixel ring of false positives (44 px)
    ring = pred & ~gt
    assert mask_iou(pred, gt) == pytest.approx(100 / 144)
    assert mask_iou(pred, gt, ignore=ring) == 1.0
    # ignored pixels of the object count neither as hit nor miss
    band = _square(20, 20, 5, 5, 15, 6)
    assert mask_iou(gt & ~band, gt, ignore=band) == 1.0


def test_iou_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_noc_by_hand():
    curve = np.array([0.5, 0.8, 0.86, 0.95])
    assert clicks_to_reach(curve, 0.85) == 3
    assert clicks_to_reach(curve, 0.90) == 4
    assert clicks_to_reach(curve, 0.99) == 20  # never reached: counts as the cap
    assert clicks_to_reach(np.array([0.9]), 0.85) == 1
    ious = np.array([[0.5, 0.8, 0.86, 0.95], [0.9, 0.9, 0.9, 0.9], [0.1, 0.2, 0.3, 0.4]])
    summary = summarize_clicks(ious)
    assert summary["noc@85"] == pytest.approx((3 + 1 + 20) / 3)
    assert summary["noc@90"] == pytest.approx((4 + 1 + 20) / 3)
    assert summary["nof@85"] == 1 and summary["nof@90"] == 1
    np.testing.assert_allclose(summary["miou_per_click"], ious.mean(axis=0))


def test_interior_point_is_the_centre_of_a_square_and_ignores_the_border():
    mask = _square(21, 21, 5, 5, 16, 16)  # 11x11, centre (10, 10)
    assert interior_point(mask) == (10.0, 10.0)
    touching = _square(10, 30, 0, 0, 10, 30)  # the whole image: the border is boundary
    _x, y = interior_point(touching)
    assert y in (4.0, 5.0)
    with pytest.raises(ValueError):
        interior_point(np.zeros((4, 4), bool))


def test_next_click_positive_negative_and_none():
    gt = _square(40, 40, 10, 10, 30, 30)
    missing_half = _square(40, 40, 10, 10, 30, 20)
    x, y, label = next_click(missing_half, gt)
    assert label == 1 and 20 <= x < 30 and 10 <= y < 30
    too_big = gt | _square(40, 40, 0, 0, 40, 8)  # extra 8-px-wide strip of false positives
    x, y, label = next_click(too_big, gt)
    assert label == 0 and x < 8
    assert next_click(gt, gt) is None
    # an error only inside the ignore band is no error
    band = _square(40, 40, 0, 0, 40, 8)
    assert next_click(too_big, gt, ignore=band) is None


def test_boxes_tight_and_noisy():
    mask = _square(50, 60, 10, 20, 30, 40)
    np.testing.assert_array_equal(mask_box(mask), [20, 10, 39, 29])
    np.testing.assert_array_equal(mask_box(_square(5, 5, 2, 2, 3, 3)), [1.5, 1.5, 2.5, 2.5])
    rng = np.random.default_rng(0)
    box = mask_box(mask)
    shifts = np.array([noisy_box(box, (50, 60), rng) - box for _ in range(500)])
    assert np.abs(shifts).max() <= 20.0
    # std 10 % of the side (19 px) ≈ 1.9 px per coordinate
    assert 1.5 < shifts.std(axis=0).mean() < 2.3
    big = np.array([0.0, 0.0, 900.0, 900.0])
    big_shifts = np.array([noisy_box(big, (1000, 1000), rng) - big for _ in range(200)])
    assert np.abs(big_shifts).max() <= 20.0 + 1e-9  # capped at 20 px although 10 % is 90


def test_label_checks():
    with pytest.raises(ImageError, match="label image is 4x5"):
        check_label_image(np.zeros((4, 5), np.uint16), (4, 6), "img")
    with pytest.raises(ImageError, match="empty"):
        check_has_objects(np.zeros((4, 4), np.uint16), "img")
    with pytest.raises(ImageError, match="covers the whole image"):
        check_has_objects(np.ones((4, 4), np.uint16), "img")
    check_has_objects(np.array([[0, 1], [2, 2]]), "img")


def test_coco_ap_hand_checked():
    """Two objects; detections: A exact (0.9), a false positive (0.8), B exact (0.7).

    Ranked: TP (P=1, R=.5), FP (P=.5, R=.5), TP (P=2/3, R=1). COCO's interpolated precision is
    1 at the 51 recall points 0..0.50 and 2/3 at the 50 points 0.51..1, at every IoU threshold
    (exact masks): AP = AP50 = (51 + 50 * 2/3) / 101. AR@1 = 0.5 (only the top detection),
    AR@10 = 1.
    """
    a = _square(32, 32, 2, 2, 12, 12)
    b = _square(32, 32, 18, 18, 30, 30)
    fp = _square(32, 32, 2, 20, 10, 30)
    item = ImageInstances(np.stack([a, b]), np.stack([a, fp, b]), np.array([0.9, 0.8, 0.7]))
    result = instance_ap([item], max_dets=(1, 10, 100))
    expected = (51 + 50 * 2 / 3) / 101
    assert result["AP50"] == pytest.approx(expected, abs=1e-6)
    assert result["AP"] == pytest.approx(expected, abs=1e-6)
    assert result["AR@1"] == pytest.approx(0.5)
    assert result["AR@10"] == pytest.approx(1.0)
    # a half-overlapping detection (IoU 0.5 exactly... 50/100) counts at IoU .5 only
    half = _square(32, 32, 2, 2, 12, 7)
    only = ImageInstances(a[None], half[None], np.array([1.0]), None)
    result = instance_ap([only], max_dets=(1, 10, 100))
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP"] == pytest.approx(0.1)  # 1 of 10 IoU thresholds
    # no detections at all: AP 0
    none = ImageInstances(a[None], np.zeros((0, 32, 32), bool), np.zeros(0))
    assert instance_ap([none])["AP50"] == pytest.approx(0.0)


def test_coco_ap_ignores_crowd_and_takes_rle():
    from pycocotools import mask as mask_utils

    a = _square(32, 32, 2, 2, 12, 12)
    crowd = _square(32, 32, 16, 0, 32, 32)
    inside_crowd = _square(32, 32, 20, 4, 30, 14)
    rle = mask_utils.encode(np.asfortranarray(a.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    item = ImageInstances(
        np.stack([a, crowd]), [rle, inside_crowd], np.array([0.9, 0.95]), np.array([0, 1])
    )
    result = instance_ap([item], max_dets=(1, 10, 100))
    assert result["AP50"] == pytest.approx(1.0)  # the detection in the crowd is no FP
