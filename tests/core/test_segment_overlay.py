"""`samscope segment --overlay`: an overlay PNG per image (the label image drawn with
`sam_core.overlay`) and one line per image with the objects found and the time."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.batch import write_overlay
from sam_core.cli import main
from sam_core.overlay import overlay

pytestmark = pytest.mark.slow

NAME = "00071198d059ba7f"  # dsb2018_fluo_dev: nuclei on a dark background
FAST = ["--points-per-side", "8", "-q"]


def _crop(nuclei_dir: Path) -> np.ndarray:
    path = nuclei_dir / "images" / f"{NAME}.png"
    return np.asarray(Image.open(path))[64:192, 64:192]


def test_overlay_per_image_and_a_line_per_image(tmp_path, nuclei_dir, mobilesam_checkpoint, capsys):
    crop = _crop(nuclei_dir)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(crop).save(inputs / "nuclei.png")
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(inputs / "blank.png")
    out = tmp_path / "out"

    code = main(["segment", str(inputs), "--out", str(out), "--overlay", *FAST])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "blank_labels.provenance.json",
        "blank_labels.tif",
        "blank_overlay.png",
        "nuclei_labels.provenance.json",
        "nuclei_labels.tif",
        "nuclei_overlay.png",
    ]
    lines = {
        m.group(1): (int(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^image    .*/(\w+)\.png: (\d+) objects in ([\d.]+) s$", stdout, re.M)
    }
    labels = tifffile.imread(out / "nuclei_labels.tif")
    assert lines["nuclei"][0] == labels.max() >= 3 and lines["nuclei"][1] > 0
    assert lines["blank"][0] == 0

    picture = np.asarray(Image.open(out / "nuclei_overlay.png"))
    assert picture.shape == (128, 128, 3) and picture.dtype == np.uint8
    plain = overlay(crop, None)  # the image alone, as the model sees it
    changed = (picture != plain).any(axis=-1)
    assert changed[labels > 0].mean() > 0.9  # objects are tinted
    assert not changed[labels == 0].any()  # background untouched
    blank = np.asarray(Image.open(out / "blank_overlay.png"))
    assert blank.shape == (64, 80, 3) and not blank.any()


def test_stack_gets_an_overlay_of_its_middle_slice(tmp_path, nuclei_dir, mobilesam_checkpoint):
    crop = _crop(nuclei_dir)
    stack = np.stack([np.zeros_like(crop), crop, crop[::-1], crop[:, ::-1]])
    tifffile.imwrite(
        tmp_path / "stack.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"}
    )
    out = tmp_path / "out"
    assert (
        main(["segment", str(tmp_path / "stack.tif"), "--out", str(out), "--overlay", *FAST]) == 0
    )
    labels = tifffile.imread(out / "stack_labels.tif")
    assert labels.shape == (4, 128, 128)
    picture = np.asarray(Image.open(out / "stack_overlay_z2.png"))  # slice 4 // 2
    assert picture.shape == (128, 128, 3)
    changed = (picture != overlay(crop[::-1], None)).any(axis=-1)
    assert changed[labels[2] > 0].mean() > 0.9 and not changed[labels[2] == 0].any()


def test_many_objects_are_drawn_in_chunks_like_one_call(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, (40, 150), dtype=np.uint16)
    labels = np.zeros((40, 150), np.uint32)
    for i in range(70):  # 70 objects: two chunks of at most 64
        labels[5:35, 2 * i : 2 * i + 2] = i + 1
    path = write_overlay(tmp_path / "o.png", image, labels)
    picture = np.asarray(Image.open(path))
    masks = labels[None] == np.arange(1, 71)[:, None, None]
    one_call = overlay(image, masks)
    # the first 64 objects get the same colours (within rounding: the image is rounded to
    # uint8 before the tint); all objects tint the same pixels
    difference = np.abs(picture[:, :128].astype(int) - one_call[:, :128])
    assert difference.max() <= 1
    changed = (picture != overlay(image, None)).any(-1)
    assert not changed[labels == 0].any()
    assert changed[labels > 64].all()  # the second chunk is drawn too
    assert changed[labels > 0].mean() > 0.99  # (the palette's gray leaves gray pixels as they are)
