"""Image validation, intensity normalisation, resizing geometry (`sam_core.image_input`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam_core import ImageError, ImageGeometry, Predictor, build_sam, prepare_image
from sam_core.image_input import MIN_INPUT_SIDE, PERCENTILES, as_rgb_uint8_or_float

RNG = np.random.default_rng(0)
H, W = 60, 80


def _rgb(h: int = H, w: int = W) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pil_resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """What the official `ResizeLongestSide.apply_image` does: PIL bilinear on RGB uint8."""
    resized = Image.fromarray(rgb, mode="RGB").resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(resized).astype(np.float32)


def _official_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    """`ResizeLongestSide.get_preprocess_shape` of segment-anything."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


# ----------------------------------------------------------------------------- shapes


def test_grayscale_is_replicated_to_three_channels() -> None:
    gray = _rgb()[..., 0]
    resized, geometry = prepare_image(gray)
    assert geometry.original_hw == (H, W)
    assert resized.shape == (*geometry.input_hw, 3)
    assert resized.dtype == np.float32
    assert np.array_equal(resized[..., 0], resized[..., 1])
    assert np.array_equal(resized[..., 0], resized[..., 2])
    single, _ = prepare_image(gray[..., None])
    stacked, _ = prepare_image(np.repeat(gray[..., None], 3, axis=-1))
    assert np.array_equal(resized, single)
    assert np.array_equal(resized, stacked)


def test_rgb_and_rgba() -> None:
    rgb = _rgb()
    resized, geometry = prepare_image(rgb)
    assert resized.shape == (*geometry.input_hw, 3)
    rgba = np.concatenate([rgb, RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)], axis=-1)
    assert np.array_equal(prepare_image(rgba)[0], resized)  # alpha dropped


def test_many_channels_need_a_choice() -> None:
    image = RNG.integers(0, 256, (H, W, 5), dtype=np.uint8)
    with pytest.raises(ImageError, match="channels") as info:
        prepare_image(image)
    assert "5 channels" in str(info.value)
    one, _ = prepare_image(image, channels=2)
    assert np.array_equal(one, prepare_image(image[..., 2])[0])
    three, _ = prepare_image(image, channels=(0, 1, 2))
    assert np.array_equal(three, prepare_image(np.ascontiguousarray(image[..., :3]))[0])
    with pytest.raises(ImageError, match="does not exist"):
        prepare_image(image, channels=7)
    with pytest.raises(ImageError, match="1 or 3 channels"):
        prepare_image(image, channels=(0, 1))
    with pytest.raises(ImageError, match="single-channel"):
        prepare_image(image[..., 0], channels=2)


def test_channel_first_image_gets_a_hint() -> None:
    with pytest.raises(ImageError, match="channel-first") as info:
        prepare_image(RNG.integers(0, 256, (3, H, W), dtype=np.uint8))
    assert "moveaxis" in str(info.value)


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 0, 3), (5, 5, 0)])
def test_empty_image(shape) -> None:
    with pytest.raises(ImageError, match="empty"):
        prepare_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(10,), (2, 10, 10, 3), (1, 1, 10, 10, 1)])
def test_wrong_rank(shape) -> None:
    with pytest.raises(ImageError, match="dimensions"):
        prepare_image(np.zeros(shape, np.uint8))


def test_stack_gets_a_slice_hint() -> None:
    with pytest.raises(ImageError, match=r"image\[z\]"):
        prepare_image(np.zeros((4, 10, 10), np.uint16)[None])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(bad) -> None:
    image = RNG.random((H, W)).astype(np.float32)
    image[3, 4] = bad
    with pytest.raises(ImageError, match="NaN or infinite") as info:
        prepare_image(image)
    assert "1 NaN" in str(info.value)


def test_complex_and_object_and_string_dtypes() -> None:
    with pytest.raises(ImageError, match="complex"):
        prepare_image(np.ones((H, W), np.complex64))
    with pytest.raises(ImageError, match="dtype object"):
        prepare_image(np.empty((H, W), dtype=object))
    with pytest.raises(ImageError, match="expected numbers"):
        prepare_image(np.full((H, W), "a"))
    with pytest.raises(ImageError, match="can't be read"):
        prepare_image([[1, 2], [3]])


def test_predictor_rejects_bad_images_before_running_the_model() -> None:
    predictor = Predictor(build_sam("vit_t"), device="cpu")
    with pytest.raises(ImageError):
        predictor.set_image(np.zeros((2, 8, 8, 3), np.uint8))
    assert not predictor.is_image_set


# ----------------------------------------------------------------------------- intensities


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.float32, np.float64])
def test_percentile_normalisation(dtype) -> None:
    values = RNG.normal(1000, 300, (H, W))
    values[0, 0], values[0, 1] = 1e6, -1e6  # hot and cold pixels must not set the range
    if np.issubdtype(dtype, np.unsignedinteger):
        values = np.clip(values, 0, None)
    image = values.astype(dtype)
    out = as_rgb_uint8_or_float(image)
    assert out.shape == (H, W, 3)
    assert out.dtype.kind == "f"
    assert np.isfinite(out).all()
    assert out.min() == 0.0 and out.max() == 255.0
    lo, hi = np.percentile(image.astype(np.float32), PERCENTILES)
    gray = out[..., 0]
    assert (gray[image <= lo] == 0).all()
    assert (gray[image >= hi] == 255).all()
    inside = (image > lo) & (image < hi)
    assert inside.mean() > 0.9
    assert ((gray[inside] > 0) & (gray[inside] < 255)).all()
    expected = (image[inside].astype(np.float32) - lo) * (255.0 / (hi - lo))
    np.testing.assert_allclose(gray[inside], expected, rtol=1e-5, atol=1e-3)
    # order preserved
    flat_in, flat_out = image.ravel(), gray.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert (np.diff(flat_out[order]) >= 0).all()


def test_normalised_image_is_float32() -> None:
    image = RNG.integers(0, 4096, (H, W), dtype=np.uint16)
    assert as_rgb_uint8_or_float(image).dtype == np.float32


def test_prepared_image_is_float32_for_every_dtype() -> None:
    for dtype in (np.uint8, np.uint16, np.int32, np.float64, bool):
        image = (RNG.random((H, W)) * 200).astype(dtype)
        assert prepare_image(image)[0].dtype == np.float32, dtype


def test_bool_image() -> None:
    image = RNG.random((H, W)) > 0.5
    out = as_rgb_uint8_or_float(image)
    assert set(np.unique(out).tolist()) == {0.0, 255.0}
    assert np.array_equal(out[..., 0] == 255, image)


def test_negative_and_int8_images() -> None:
    image = RNG.integers(-100, 100, (H, W), dtype=np.int8)
    out = as_rgb_uint8_or_float(image)
    assert out.min() == 0.0 and out.max() == 255.0


@pytest.mark.parametrize(
    "dtype", [np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64, bool]
)
@pytest.mark.parametrize("normalization", ["auto", "percentile", "minmax"])
def test_constant_image_maps_to_zeros(dtype, normalization) -> None:
    image = np.full((H, W), 1 if dtype is bool else 7, dtype=dtype)
    out = as_rgb_uint8_or_float(image, normalization=normalization)
    assert np.isfinite(out).all()
    assert (out == 0).all()
    resized, _ = prepare_image(image, normalization=normalization)
    assert np.isfinite(resized).all() and (resized == 0).all()


def test_constant_uint8_is_kept_as_is() -> None:
    resized, _ = prepare_image(np.full((H, W), 7, np.uint8))
    assert (resized == 7).all()


def test_nearly_constant_image_falls_back_to_minmax() -> None:
    image = np.zeros((H, W), np.uint16)
    image[0, 0] = 500  # one bright pixel: percentiles 1 and 99.8 are both 0
    out = as_rgb_uint8_or_float(image)
    assert out[0, 0, 0] == 255.0
    assert (out[1:] == 0).all()


def test_other_normalizations() -> None:
    image = np.linspace(10, 20, H * W, dtype=np.float32).reshape(H, W)
    out = as_rgb_uint8_or_float(image, normalization="minmax")
    assert out.min() == 0 and out.max() == 255
    none = as_rgb_uint8_or_float(image, normalization="none")
    np.testing.assert_array_equal(none[..., 0], image)
    with pytest.raises(ImageError, match="0-255"):
        as_rgb_uint8_or_float(image * 100, normalization="none")
    with pytest.raises(ImageError, match="unknown normalization"):
        as_rgb_uint8_or_float(image, normalization="zscore")
    # uint8 with an explicit normalization is stretched too
    u8 = np.linspace(50, 100, H * W).astype(np.uint8).reshape(H, W)
    stretched = as_rgb_uint8_or_float(u8, normalization="minmax")
    assert stretched.min() == 0 and stretched.max() == 255


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((640, 480), (1024, 768)),
        ((480, 640), (768, 1024)),
        ((1040, 1388), (767, 1024)),
        ((256, 256), (1024, 1024)),
        ((256, 320), (819, 1024)),
        ((16, 1024), (16, 1024)),
        ((1000, 16), (1024, 16)),
        ((2048, 4096), (512, 1024)),
        ((1024, 1024), (1024, 1024)),
    ],
)
def test_geometry_rounding_matches_official(hw, expected) -> None:
    geometry = ImageGeometry.for_shape(hw)
    assert geometry.original_hw == hw
    assert geometry.input_hw == expected == _official_shape(*hw)


def test_geometry_rounding_many_shapes() -> None:
    for h, w in RNG.integers(1, 3000, (500, 2)).tolist():
        expected = tuple(max(MIN_INPUT_SIDE, side) for side in _official_shape(h, w))
        assert ImageGeometry.for_shape((h, w)).input_hw == expected, (h, w)


def test_points_map_to_the_input_frame() -> None:
    geometry = ImageGeometry.for_shape((1040, 1388))
    sx, sy = geometry.scale_xy
    assert sx == 1024 / 1388 and sy == 767 / 1040
    xy = np.array([[0.0, 0.0], [1388.0, 1040.0], [100.0, 50.0]])
    frame = geometry.to_input_frame(xy)
    assert frame.dtype == np.float32
    np.testing.assert_allclose(frame, xy * np.array([sx, sy]), rtol=1e-6)
    np.testing.assert_allclose(frame[1], [1024.0, 767.0], rtol=1e-6)


# ----------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("hw", [(60, 80), (640, 480), (1040, 1388), (1, 50), (300, 2), (1024, 600)])
def test_uint8_rgb_resize_is_pil_bilinear(hw) -> None:
    rgb = _rgb(*hw)
    resized, geometry = prepare_image(rgb)
    assert geometry.input_hw == tuple(max(MIN_INPUT_SIDE, s) for s in _official_shape(*hw))
    assert np.array_equal(resized, _pil_resize(rgb, geometry.input_hw))


@pytest.mark.parametrize("hw", [(60, 80), (1040, 1388), (1, 50)])
def test_gray_fast_path_equals_rgb_path(hw) -> None:
    gray = _rgb(*hw)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    resized, geometry = prepare_image(gray)
    assert np.array_equal(resized, _pil_resize(rgb, geometry.input_hw))
    assert np.array_equal(prepare_image(rgb)[0], resized)


def test_real_grayscale_file_read_as_rgb(nuclei_dir, read_rgb) -> None:
    path = next(iter(sorted((nuclei_dir / "images").glob("*.png"))))
    rgb = read_rgb(path)
    with Image.open(path) as image:
        gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    assert np.array_equal(prepare_image(gray)[0], prepare_image(rgb)[0])


def test_float_resize_is_close_to_uint8_resize() -> None:
    """Non-8-bit images are resized in float (no rounding): within 1 of PIL's uint8 path."""
    rgb = _rgb(300, 500)
    as_float, geometry = prepare_image(rgb.astype(np.float32), normalization="none")
    as_uint8, _ = prepare_image(rgb)
    assert as_float.shape == as_uint8.shape == (*geometry.input_hw, 3)
    # PIL rounds to uint8 after each of its two passes (and uses fixed-point weights)
    assert np.abs(as_float - as_uint8).max() <= 1.0
