"""Reading image files (dtype kept, odd PNG modes, damaged files) and writing masks atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.errors import ImageError
from sam_core.image_io import read_image, write_bytes, write_mask_png, write_png

RNG = np.random.default_rng(0)


def _gray(shape=(20, 30), dtype=np.uint8, high=255):
    return RNG.integers(0, high, size=shape, endpoint=True).astype(dtype)


def test_png_gray_and_rgb_round_trip(tmp_path):
    gray, rgb = _gray(), _gray((20, 30, 3))
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "g.png").dtype == np.uint8
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(str(tmp_path / "c.png")), rgb)


def test_png_16_bit_stays_uint16(tmp_path):
    image = _gray(dtype=np.uint16, high=65535)
    Image.fromarray(image).save(tmp_path / "16.png")
    out = read_image(tmp_path / "16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int16])
def test_tiff_keeps_dtype(tmp_path, dtype):
    image = (_gray(high=4000).astype(np.float64) * 1.5).astype(dtype)
    for name in ("a.tif", "b.TIFF"):
        tifffile.imwrite(tmp_path / name, image)
        out = read_image(tmp_path / name)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, image)


def test_big_endian_tiff_comes_back_native(tmp_path):
    image = _gray(dtype=np.uint16, high=65535)
    tifffile.imwrite(tmp_path / "be.tif", image, byteorder=">")
    out = read_image(tmp_path / "be.tif")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, image)


def test_rgba_and_la_png_drop_alpha(tmp_path):
    rgba = _gray((20, 30, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgba[..., :3])

    la = _gray((20, 30, 2))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la[..., 0])


def test_palette_png(tmp_path):
    index = RNG.integers(0, 4, size=(10, 12)).astype(np.uint8)
    gray_palette = [v for level in (0, 80, 160, 255) for v in (level,) * 3]
    img = Image.fromarray(index, "P")
    img.putpalette(gray_palette)
    img.save(tmp_path / "gray_p.png")
    out = read_image(tmp_path / "gray_p.png")
    assert out.shape == (10, 12)  # a gray palette gives a gray image
    np.testing.assert_array_equal(out, np.array([0, 80, 160, 255])[index])

    colour_palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
    img = Image.fromarray(index, "P")
    img.putpalette(colour_palette)
    img.info["transparency"] = 0
    img.save(tmp_path / "rgb_p.png")
    out = read_image(tmp_path / "rgb_p.png")
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, np.array(colour_palette).reshape(4, 3)[index])


def test_bilevel_png_is_0_255(tmp_path):
    bits = RNG.random((10, 12)) > 0.5
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.where(bits, 255, 0))


def test_jpeg_reads_as_rgb(tmp_path):
    Image.fromarray(_gray((16, 16, 3))).save(tmp_path / "x.jpg", quality=95)
    out = read_image(tmp_path / "x.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_file_is_an_image_error(tmp_path, suffix):
    path = tmp_path / f"full{suffix}"
    image = _gray((64, 64))
    if suffix == ".tif":
        tifffile.imwrite(path, image)
    else:
        Image.fromarray(image).save(path)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\."):
        read_image(cut)


def test_missing_empty_and_non_image_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        read_image(tmp_path / "text.png")
    (tmp_path / "text.tif").write_text("hello, not a picture\n")
    with pytest.raises(ImageError, match="cannot read TIFF"):
        read_image(tmp_path / "text.tif")


def test_write_mask_png_is_0_255_and_atomic(tmp_path):
    mask = RNG.random((20, 30)) > 0.5
    path = write_mask_png(tmp_path / "new" / "sub" / "mask.png", mask)
    out = read_image(path)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
    np.testing.assert_array_equal(out > 0, mask)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.png"]  # no temp left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    write_mask_png(path, np.arange(600).reshape(20, 30) % 3)  # numbers: > 0 is foreground
    assert (read_image(path) == 255).sum() == 400


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_bytes(tmp_path / "summary.json", b"old")

    def broken_save(self, fp, format=None, **params):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png(path, np.zeros((4, 4), np.uint8))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_write_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ImageError, match="2-D"):
        write_mask_png(tmp_path / "m.png", np.zeros((2, 4, 4), bool))
    with pytest.raises(ImageError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.float32))
