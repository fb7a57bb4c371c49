"""Automatic mask generator pieces on constructed inputs (no model weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_core.automatic import (
    box_nms,
    crop_regions,
    decode_segmentation,
    encode_rle,
    masks_to_label_image,
    tile_regions,
    unit_grid,
)
from sam_core.automatic.postprocess import remove_small_regions
from sam_core.automatic.records import encode_rle_cropped, full_mask
from sam_core.automatic.windowed_logits import WindowedUpsampler
from sam_core.image_input import ImageGeometry
from sam_core.mask_upsampling import upsample_logits
from sam_core.tiling import TileLayout


def test_unit_grid_is_cell_centres_x_fastest():
    grid = unit_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(grid[:4, 0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(grid[:4, 1], 0.125)
    np.testing.assert_allclose(grid[4, 1], 0.375)


def test_crop_layers_cover_the_image_with_overlap():
    regions = crop_regions((600, 800), 32, crop_n_layers=2, crop_n_points_downscale_factor=2)
    assert [r.layer for r in regions] == [0] + [1] * 4 + [2] * 16
    assert regions[0].box_xyxy == (0, 0, 800, 600)
    layer1 = [r.box_xyxy for r in regions if r.layer == 1]
    overlap = int(512 / 1500 * 600 * 2 / 2)
    assert layer1[0][2] - layer1[1][0] == overlap  # neighbours overlap by the documented amount
    assert max(b[2] for b in layer1) == 800 and max(b[3] for b in layer1) == 600
    assert {r.points_per_side for r in regions} == {32, 16, 8}


def test_tiles_partition_the_image_and_add_a_clipped_halo():
    layout = TileLayout.for_shape((1000, 2100), (512, 1024), (64, 128))
    regions = tile_regions(layout, 16)
    inner = np.zeros((1000, 2100), int)
    for r in regions:
        x0, y0, x1, y1 = r.points_box_xyxy
        inner[y0:y1, x0:x1] += 1
        ox0, _, _, oy1 = r.box_xyxy
        assert ox0 == max(0, x0 - 128) and oy1 == min(1000, y1 + 64)
        points = r.grid_points_xy()
        assert len(points) == 256
        assert (points[:, 0] > x0).all() and (points[:, 0] < x1).all()
    assert (inner == 1).all()
    assert len(regions) == 2 * 3


def test_box_nms_keeps_best_of_overlapping_and_disjoint_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    kept = box_nms(boxes, scores, 0.7)
    # box 1 (0.9) suppresses box 0 (IoU 0.81); box 3 has IoU 0.5 with box 0... and 4/9*.. with 1
    assert kept.tolist() == [1, 3, 2]
    assert box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


@pytest.mark.parametrize("hw", [(256, 256), (480, 640), (1040, 1388), (77, 1500)])
def test_windowed_logits_match_the_dense_upsampling(hw):
    geometry = ImageGeometry.for_shape(hw)
    rng = np.random.default_rng(0)
    low_res = np.full((256, 256), -8.0, np.float32)
    rows = max(2, geometry.input_hw[0] // 8)  # inside the unpadded part of the 256² grid
    low_res[rows // 2 : rows // 2 + rows, 100:140] = rng.normal(2.0, 2.0, (rows, 40))
    dense = upsample_logits(torch.from_numpy(low_res), geometry).numpy()
    window = WindowedUpsampler(geometry).window(low_res, -1.0)
    h, w = window.logits.shape
    np.testing.assert_allclose(
        window.logits, dense[window.y0 : window.y0 + h, window.x0 : window.x0 + w], atol=1e-3
    )
    outside = dense.copy()
    outside[window.y0 : window.y0 + h, window.x0 : window.x0 + w] = -np.inf
    assert (outside <= -1.0).all()  # nothing outside the window can pass the floor
    assert WindowedUpsampler(geometry).window(np.full((256, 256), -5.0, np.float32), -1.0) is None
    padding_only = np.full((256, 256), -5.0, np.float32)
    padding_only[255, 255] = 9.0  # in the padding of every non-square image: read by no pixel
    if geometry.input_hw != (1024, 1024):
        assert WindowedUpsampler(geometry).window(padding_only, -1.0) is None


def test_small_holes_are_filled_and_small_islands_removed():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[10:12, 10:12] = False  # 4-pixel hole
    mask[35:37, 35:37] = True  # 4-pixel island
    cleaned, changed = remove_small_regions(mask, 10)
    assert changed and cleaned[10:12, 10:12].all() and not cleaned[35:37, 35:37].any()
    assert cleaned[5:30, 5:30].all()
    assert remove_small_regions(mask, 0) == (mask, False)
    tiny = np.zeros((10, 10), bool)
    tiny[2:4, 2:4] = True
    assert not remove_small_regions(tiny, 10)[0].any()  # whole mask below the limit: removed


def test_label_image_is_non_overlapping_and_keeps_nested_objects():
    big = np.zeros((20, 20), bool)
    big[2:18, 2:18] = True
    small = np.zeros((20, 20), bool)
    small[8:12, 8:12] = True
    records = [
        {"segmentation": small, "area": 16, "bbox": [8, 8, 4, 4], "predicted_iou": 0.9},
        {
            "segmentation": encode_rle(big),
            "area": 256,
            "bbox": [2, 2, 16, 16],
            "predicted_iou": 0.95,
        },
    ]
    labels = masks_to_label_image(records, (20, 20))
    assert labels.dtype == np.uint32
    assert (
        (labels[small] == 1).all() and (labels[big & ~small] == 2).all() and labels[~big].max() == 0
    )
    by_iou = masks_to_label_image(records, (20, 20), order="iou")
    assert (by_iou[big] == 2).all()
    local, box = decode_segmentation(records[1], (20, 20))
    assert box == (2, 2, 18, 18) and local.all()


@pytest.mark.parametrize(
    "box", [(3, 4, 9, 12), (0, 0, 5, 5), (15, 15, 20, 20), (0, 7, 20, 9), (4, 0, 6, 20)]
)
def test_rle_from_a_cropped_mask_equals_the_full_mask_rle(box):
    rng = np.random.default_rng(sum(box))
    x0, y0, x1, y1 = box
    local = rng.random((y1 - y0, x1 - x0)) > 0.4
    local[0, 0] = local[-1, -1] = True
    full = full_mask(local, box, (20, 20))
    assert encode_rle_cropped(local, box, (20, 20)) == encode_rle(full)
    empty_edges = np.zeros((y1 - y0, x1 - x0), bool)
    empty_edges[(y1 - y0) // 2, (x1 - x0) // 2] = True
    assert encode_rle_cropped(empty_edges, box, (20, 20)) == encode_rle(
        full_mask(empty_edges, box, (20, 20))
    )
