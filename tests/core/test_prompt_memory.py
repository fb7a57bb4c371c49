"""Full-size masks of many prompts are upsampled in chunks (issue 13), with unchanged values.

`Predictor.predict` used to upsample every mask of a batch to full size as float32 at once
(4.6 GiB of temporaries for 200 boxes on a 2048² image). `upsample_to_numpy` now works a chunk
of masks at a time into a preallocated output. These tests check that chunking changes no
value and no dtype/shape; the memory it saves is measured in
`benchmarks/bench_prompt_memory.py`, not asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from sam_core import ImageGeometry, Predictor, mask_upsampling
from sam_core.mask_upsampling import masks_per_chunk, upsample_logits, upsample_to_numpy

MiB = 2**20


def _random_low_res(count: int, seed: int = 0) -> torch.Tensor:
    """(count, 1, 256, 256) smooth-ish logits with both signs, like decoder output."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 1, 32, 32, generator=generator) * 6.0
    return torch.nn.functional.interpolate(coarse, (256, 256), mode="bilinear")


@pytest.mark.parametrize("hw", [(303, 384), (1040, 1388), (2, 3000), (700, 700)])
@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * (1024 * 1024 + 1388 * 1040)])
def test_chunked_upsampling_is_bit_identical_to_one_shot(hw, chunk_bytes):
    geometry = ImageGeometry.for_shape(hw)
    low_res = _random_low_res(40)
    one_shot = upsample_logits(low_res, geometry).numpy()

    logits = upsample_to_numpy(low_res, geometry, return_logits=True, chunk_bytes=chunk_bytes)
    assert logits.dtype == np.float32 and logits.shape == (40, 1, *hw)
    assert np.array_equal(logits, one_shot)

    masks = upsample_to_numpy(low_res, geometry, chunk_bytes=chunk_bytes)
    assert masks.dtype == np.bool_ and masks.shape == (40, 1, *hw)
    assert np.array_equal(masks, one_shot > 0)
    assert 0 < masks.mean() < 1  # both signs occur: the comparison means something

    shifted = upsample_to_numpy(low_res, geometry, threshold=2.0, chunk_bytes=chunk_bytes)
    assert np.array_equal(shifted, one_shot > 2.0)


def test_chunk_size_follows_the_pixels_per_mask():
    assert masks_per_chunk(ImageGeometry.for_shape((2048, 2048)), 1) == 1
    for hw in [(2048, 2048), (1024, 1024), (1040, 1388), (303, 384)]:
        geometry = ImageGeometry.for_shape(hw)
        count = masks_per_chunk(geometry)
        per_mask = 4 * (1024 * 1024 + hw[0] * hw[1])  # float32: ≥ first pass + full size
        assert 64 * MiB <= count * per_mask <= 128 * MiB, (hw, count)
    assert masks_per_chunk(ImageGeometry.for_shape((2048, 2048))) == 4
    assert masks_per_chunk(ImageGeometry.for_shape((303, 384))) > 15  # by pixels, not a count
    assert masks_per_chunk(ImageGeometry.for_shape((8000, 8000))) == 1  # 244 MiB per mask


# ------------------------------------------------------------------- through the predictor


@pytest.fixture(scope="module")
def coins_predictor(vit_t_model) -> Predictor:
    predictor = Predictor(vit_t_model, device="cpu")
    predictor.set_image(data.coins())  # (303, 384) uint8
    return predictor


def _boxes(count: int, hw: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(1)
    h, w = hw
    x0 = rng.uniform(0, w - 60, count)
    y0 = rng.uniform(0, h - 60, count)
    size = rng.uniform(20, 60, (count, 2))
    return np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], axis=1)


def test_predict_with_tiny_chunks_matches_the_one_shot_upsampling(coins_predictor, monkeypatch):
    monkeypatch.setattr(mask_upsampling, "UPSAMPLE_CHUNK_BYTES", 1)  # one mask per chunk
    hw = (303, 384)
    boxes = _boxes(40, hw)
    geometry = coins_predictor.embedding.geometry

    masks, scores, low_res = coins_predictor.predict(box=boxes, multimask=False)
    assert masks.shape == (40, 1, *hw) and masks.dtype == np.bool_
    assert scores.shape == (40, 1) and scores.dtype == np.float32
    assert low_res.shape == (40, 1, 256, 256) and low_res.dtype == np.float32
    one_shot = upsample_logits(torch.from_numpy(low_res), geometry).numpy()
    assert np.array_equal(masks, one_shot > 0)
    assert masks.any(axis=(1, 2, 3)).all()  # every box found something

    logits, _, low_res_again = coins_predictor.predict(
        box=boxes, multimask=False, return_logits=True
    )
    assert logits.shape == (40, 1, *hw) and logits.dtype == np.float32
    assert np.array_equal(low_res_again, low_res)
    assert np.array_equal(logits, one_shot)


def test_unbatched_predict_keeps_its_shapes(coins_predictor, monkeypatch):
    monkeypatch.setattr(mask_upsampling, "UPSAMPLE_CHUNK_BYTES", 1)
    masks, scores, low_res = coins_predictor.predict(points=[[154, 119]], labels=[1])
    assert masks.shape == (3, 303, 384) and masks.dtype == np.bool_
    assert scores.shape == (3,) and low_res.shape == (3, 256, 256)
    assert np.array_equal(
        masks, upsample_logits(torch.from_numpy(low_res), coins_predictor.embedding.geometry) > 0
    )
