"""The ``samscope`` command line, run in-process through ``main([...])``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.cli import main, seed_points
from sam_core.image_io import read_image

MODELS = ("vit_t", "vit_b", "vit_l", "vit_h")
NUCLEI_IMAGE = "c043d5ac9dd46605"  # 256x256 gray, 13 nuclei


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_png(tmp_path) -> Path:
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(path)
    return path


def test_models_lists_all_models_and_the_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in MODELS:
        assert name in out
    assert "MobileSAM" in out and "40.7" in out  # description and size in MB
    assert f"cache folder: {tmp_path / 'cache'}" in out
    assert "SAMSCOPE_CACHE_DIR" in out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("samscope")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    done = subprocess.run(
        [str(script), "models"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in MODELS)


def test_help_and_version(capsys):
    assert run(["--version"], capsys)[0] == 0
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and all(cmd in out for cmd in ("models", "predict", "demo"))
    code, _, err = run([], capsys)
    assert code == 2 and "required" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{tmp}/missing.png", "--point", "3,4"], "image file not found"),
        (["predict", "{png}", "--point", "100,5"], "outside"),
        (["predict", "{png}", "--point", "3,4", "--model", "vit_q"], "unknown model 'vit_q'"),
        (["predict", "{png}", "--point", "a,b"], "expected X,Y, got 'a,b'"),
        (["predict", "{png}", "--box", "1,2,3"], "expected X0,Y0,X1,Y1"),
        (["predict", "{png}"], "no prompt"),
        (["predict", "--point", "3,4"], "either an IMAGE file or --sample"),
        (["predict", "{png}", "--point", "3,4", "--all-masks", "--single"], "--all-masks"),
        (["predict", "{png}", "--point", "3,4", "--channel", "2"], "channels=2"),
        (["predict", "--sample", "human_mitosis"], "invalid choice"),
        (["demo", "--objects", "0"], "--objects"),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(argv, message, capsys, tmp_path, small_png):
    argv = [a.format(tmp=tmp_path, png=small_png) for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # argparse prints its usage line first
    assert last.startswith("samscope") and "error:" in last and message in last
    assert not list(Path.cwd().glob("small_mask*.png"))


def test_seed_points_pick_interior_of_largest_inner_objects():
    image = np.zeros((100, 120), np.uint8)
    yy, xx = np.mgrid[:100, :120]
    image[(yy - 30) ** 2 + (xx - 40) ** 2 <= 15**2] = 200  # big disc at (40, 30)
    image[(yy - 70) ** 2 + (xx - 90) ** 2 <= 8**2] = 200  # small disc at (90, 70)
    image[:, 115:] = 200  # a large stripe touching the border: ranked last
    points = seed_points(image, count=3)
    np.testing.assert_array_equal(points[:2], [[40, 30], [90, 70]])
    assert points[2][0] >= 115
    np.testing.assert_array_equal(seed_points(np.full((10, 10), 7, np.uint16)), [[4.5, 4.5]])


def test_overlay_draws_masks_points_and_box():
    from sam_core.overlay import BOX, NEGATIVE, POSITIVE, overlay

    image = np.linspace(0, 5000, 60 * 80, dtype=np.float64).reshape(60, 80).astype(np.uint16)
    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:40] = True
    out = overlay(image, mask, points_xy=[[20, 20], [60, 45]], labels=[1, 0], box=[5, 5, 50, 35])
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert tuple(out[20, 20]) == POSITIVE and tuple(out[45, 60]) == NEGATIVE
    assert tuple(out[5, 30]) == BOX and tuple(out[35, 30]) == BOX and tuple(out[20, 50]) == BOX
    plain = overlay(image, None)
    assert not np.array_equal(out[15, 30], plain[15, 30])  # tinted inside the mask
    np.testing.assert_array_equal(out[50, 5], plain[50, 5])  # untouched outside
    with pytest.raises(ValueError, match="don't fit"):
        overlay(image, mask[:10])


@pytest.mark.slow
def test_predict_writes_mask_and_overlay(capsys, tmp_path, nuclei_dir, mobilesam_checkpoint):
    data = nuclei_dir
    image_path = data / "images" / f"{NUCLEI_IMAGE}.png"
    if not image_path.exists():
        pytest.skip(f"{image_path} is absent")
    labels = read_image(data / "labels" / f"{NUCLEI_IMAGE}.tif")
    nucleus = labels == np.bincount(labels.ravel())[1:].argmax() + 1  # the largest one
    ((x, y),) = seed_points(nucleus.astype(np.uint8))
    out = tmp_path / "out" / "mask.png"
    code, stdout, err = run(
        ["predict", image_path, "--point", f"{x:g},{y:g}", "--out", out, "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    mask = read_image(out)
    assert mask.shape == labels.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    predicted = mask > 0
    iou = (predicted & nucleus).sum() / (predicted | nucleus).sum()
    assert iou > 0.6, f"IoU {iou:.2f} with the prompted nucleus"
    overlay = read_image(tmp_path / "out" / "mask_overlay.png")
    assert overlay.shape == (*labels.shape, 3)
    assert "score" in stdout and "set_image" in stdout


@pytest.mark.slow
def test_demo_writes_masks_overlay_and_summary(capsys, tmp_path, mobilesam_checkpoint):
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--out", out, "--objects", "3", "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "vit_t" and summary["sample"] == "coins"
    assert len(summary["objects"]) == 3
    for obj in summary["objects"]:
        mask = read_image(out / obj["mask"]) > 0
        assert mask.shape == (303, 384)
        assert 1000 < mask.sum() == obj["area_px"] < 5000  # one coin, not the background
        x, y = (round(v) for v in obj["point_xy"])
        assert mask[y, x]
        assert obj["score"] > 0.8
    assert read_image(out / "overlay.png").shape == (303, 384, 3)
    assert "object" in stdout and "set_image" in stdout
    assert sorted(os.listdir(out)) == [
        "automatic.json", "automatic_overlay.png", "labels.tif",
        "object_01.png", "object_02.png", "object_03.png", "overlay.png", "summary.json"
    ]  # fmt: skip
    # automatic masks: the 24 coins are separate objects of the label image
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (303, 384) and summary["automatic"]["masks"] == labels.max()
    coins = np.unique(labels[[45, 125, 195, 265]][:, ::8])  # the four rows of coins
    assert len(coins[coins > 0]) >= 20
    assert labels[5, 5] == 0  # the background is not an object
