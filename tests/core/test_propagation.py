"""Propagation of one object through a stack: prompts from masks, and real MobileSAM on a 3-D
nuclei volume (stardist's synthetic one) against its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from sam_core.errors import PromptError
from sam_core.propagation import (
    interior_points,
    mask_contrast,
    mask_iou,
    prompts_from_mask,
    propagate,
)


def test_prompts_from_mask_box_and_interior_points():
    mask = np.zeros((40, 60), bool)
    mask[10:20, 5:25] = True  # big part
    mask[30:34, 50:54] = True  # small part
    prompts = prompts_from_mask(mask, n_points=2)
    assert prompts.box_xyxy.tolist() == [4.5, 9.5, 53.5, 33.5]
    x, y = prompts.points_xy[0]
    assert 9 <= x <= 20 and 14 <= y <= 15  # 5 px from the background: the deepest level
    assert mask[int(prompts.points_xy[1][1]), int(prompts.points_xy[1][0])]
    assert prompts.labels.tolist() == [1, 1]
    assert prompts_from_mask(np.zeros((5, 5), bool)) is None
    assert interior_points(np.zeros((5, 5), bool)).shape == (0, 2)
    with pytest.raises(PromptError):
        prompts_from_mask(np.zeros((2, 5, 5), bool))


def test_iou_and_contrast():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    assert mask_iou(a, b) == pytest.approx(25 / 75) and mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0
    image = np.where(a, 100.0, 10.0)
    inner = np.zeros_like(a)
    inner[1:4, 3:7] = True
    assert mask_contrast(image, inner, ring_px=1) == 0.0  # ring inside the bright object too
    assert mask_contrast(image, a) == pytest.approx(90.0)


@pytest.mark.slow
def test_propagation_follows_a_nucleus_through_the_volume(vit_t_model, shared_dir):
    import tifffile

    from sam_core import Predictor

    folder = shared_dir / "data" / "stardist_pkg"
    volume = tifffile.imread(folder / "images" / "img3d.tif")
    gt = tifffile.imread(folder / "labels" / "img3d.tif")
    obj, start = 81, 17  # a nucleus spanning slices 15-25; a dark gap below 15
    predictor = Predictor(vit_t_model, device="cpu")
    cache: dict[int, object] = {}

    def embedding_for(z: int):
        if z not in cache:
            cache[z] = predictor.compute_embedding(volume[z])
        return cache[z]

    seen = []
    result = propagate(
        predictor,
        embedding_for,
        start,
        gt[start] == obj,
        len(volume),
        slice_for=lambda z: volume[z],
        max_steps=3,
        progress=lambda done, total: seen.append(done),
    )
    reached = result.indices
    print({z: round(mask_iou(result.masks[z], gt[z] == obj), 2) for z in reached})
    print(result.stop_reasons)
    assert min(reached) <= start - 1 and max(reached) >= start + 2
    near = [z for z in reached if z != start]
    assert np.mean([mask_iou(result.masks[z], gt[z] == obj) for z in near]) > 0.6
    assert max(reached) == start + 3  # max_steps
    assert "contrast" in result.stop_reasons[-1]  # the dark gap below the nucleus stops it
    assert seen == list(range(1, len(seen) + 1))
