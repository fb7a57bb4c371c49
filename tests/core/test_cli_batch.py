"""`samscope segment` / `samscope embed` end to end with the real MobileSAM.

Inputs are 128² crops of dsb2018 nuclei images and an 8x8 point grid, so one image costs one
encoder pass and one decoder batch. The reference run (`reference`) is shared by the tests
that compare outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.cli import main

pytestmark = pytest.mark.slow

NAMES = ("00071198d059ba7f", "003cee89357d9fe1", "094afe36759e7daf")
FAST = ["--points-per-side", "8", "-q"]


def _crop(nuclei_dir: Path, name: str, folder: str = "images", suffix: str = ".png"):
    path = nuclei_dir / folder / f"{name}{suffix}"
    array = tifffile.imread(path) if suffix == ".tif" else np.asarray(Image.open(path))
    return array[64:192, 64:192]


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory, nuclei_dir) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for name in NAMES:
        Image.fromarray(_crop(nuclei_dir, name)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, input_dir) -> Path:
    """A complete, uninterrupted serial run over `input_dir` (tif)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["segment", str(input_dir), "--out", str(out), *FAST]) == 0
    return out


def _segment(capsys, *args) -> tuple[int, str, str]:
    code = main(["segment", *[str(a) for a in args], *FAST])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_labels_are_instance_images_that_find_the_nuclei(reference, nuclei_dir):
    names = sorted(p.name for p in reference.iterdir())
    labels_and_sidecars = [f"{n}_labels{s}" for n in NAMES for s in (".provenance.json", ".tif")]
    assert names == sorted(labels_and_sidecars)
    for name in NAMES:
        labels = tifffile.imread(reference / f"{name}_labels.tif")
        assert labels.dtype == np.uint32 and labels.shape == (128, 128)
        ids = np.unique(labels)[1:]
        assert len(ids) >= 1 and ids.max() == len(ids)  # ids 1..N
        truth = _crop(nuclei_dir, name, "labels", ".tif")
        # real segmentation: several nuclei are found as whole objects (an 8x8 grid misses
        # some small ones; the whole-crop background may be an object too)
        assert _nuclei_found(labels, truth, min_iou=0.8) >= 2


def _nuclei_found(labels: np.ndarray, truth: np.ndarray, min_iou: float) -> int:
    found = 0
    for nucleus in np.unique(truth)[1:]:
        mask = truth == nucleus
        for label in np.unique(labels[mask]):
            other = labels == label
            if label and (mask & other).sum() / (mask | other).sum() >= min_iou:
                found += 1
                break
    return found


def test_bad_files_are_reported_and_skipped_and_a_rerun_skips_finished_images(
    tmp_path, input_dir, reference, capsys
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = folder / f"{NAMES[0]}.png"
    good.write_bytes((input_dir / f"{NAMES[0]}.png").read_bytes())
    data = (input_dir / f"{NAMES[1]}.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.tif").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, _ = _segment(capsys, folder, "--out", out)
    assert code == 1
    assert "failed   " in stdout and "truncated.png" in stdout and "notes.tif" in stdout
    assert "1 written" in stdout and "2 failed" in stdout
    assert sorted(p.name for p in out.glob("*_labels.tif")) == [f"{NAMES[0]}_labels.tif"]
    written = out / f"{NAMES[0]}_labels.tif"
    assert written.read_bytes() == (reference / written.name).read_bytes()

    stamp = written.stat().st_mtime_ns
    code, stdout, _ = _segment(capsys, folder, "--out", out)
    assert code == 1 and "1 skipped" in stdout and "0 written" in stdout
    assert written.stat().st_mtime_ns == stamp


def test_png_and_coco_formats_hold_the_same_masks(tmp_path, input_dir, reference, capsys):
    from pycocotools import mask as mask_utils

    image = input_dir / f"{NAMES[2]}.png"
    tif = tifffile.imread(reference / f"{NAMES[2]}_labels.tif")
    assert _segment(capsys, image, "--out", tmp_path, "--format", "png")[0] == 0
    png = np.asarray(Image.open(tmp_path / f"{NAMES[2]}_labels.png"))
    np.testing.assert_array_equal(png, tif)

    assert _segment(capsys, image, "--out", tmp_path, "--format", "coco")[0] == 0
    document = json.loads((tmp_path / f"{NAMES[2]}_masks.json").read_text())
    assert document["images"][0] == {
        "id": 1,
        "file_name": image.name,
        "height": 128,
        "width": 128,
    }
    annotations = document["annotations"]
    assert len(annotations) >= len(np.unique(tif)) - 1
    union = np.zeros((128, 128), bool)
    for annotation in annotations:
        mask = mask_utils.decode(annotation["segmentation"]).astype(bool)
        assert mask.sum() == annotation["area"]
        union |= mask
    np.testing.assert_array_equal(union, tif > 0)


def test_stacks_give_label_stacks_and_other_shapes_a_clear_error(
    tmp_path, nuclei_dir, reference, capsys
):
    stack = np.stack([_crop(nuclei_dir, n) for n in NAMES[:2]])  # (2, 128, 128)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", stack)
    code, _, _ = _segment(capsys, folder / "stack.tif", "--out", tmp_path / "out")
    assert code == 0
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    assert labels.shape == (2, 128, 128) and labels.dtype == np.uint32
    for z, name in enumerate(NAMES[:2]):
        np.testing.assert_array_equal(labels[z], tifffile.imread(reference / f"{name}_labels.tif"))

    code, stdout, _ = _segment(
        capsys, folder / "stack.tif", "--out", tmp_path / "png", "--format", "png"
    )
    assert code == 1 and "stack of 2 slices" in stdout and "--format tif" in stdout
    tifffile.imwrite(folder / "five_d.tif", np.zeros((2, 2, 2, 16, 16), np.uint8))
    code, stdout, _ = _segment(capsys, folder / "five_d.tif", "--out", tmp_path / "out")
    assert code == 1 and "5-D data" in stdout


def test_blank_images_give_valid_empty_results(tmp_path, capsys):
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(tmp_path / "blank.png")
    assert _segment(capsys, tmp_path / "blank.png", "--out", tmp_path / "t")[0] == 0
    labels = tifffile.imread(tmp_path / "t" / "blank_labels.tif")
    assert labels.shape == (64, 80) and not labels.any()
    code, stdout, _ = _segment(
        capsys, tmp_path / "blank.png", "--out", tmp_path / "c", "--format", "coco"
    )
    assert code == 0 and "0 objects" in stdout
    document = json.loads((tmp_path / "c" / "blank_masks.json").read_text())
    assert document["annotations"] == [] and document["images"][0]["width"] == 80


def test_usage_errors_end_with_one_message(tmp_path, input_dir, capsys):
    code, _, err = _segment(capsys, tmp_path / "missing", "--out", tmp_path)
    assert code == 2 and "input not found" in err
    code, _, err = _segment(capsys, input_dir, "--out", tmp_path, "--pred-iou-thresh", "2")
    assert code == 2 and "between 0 and 1" in err
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(other / f"{NAMES[0]}.png")
    code, _, err = _segment(capsys, input_dir, other, "--out", tmp_path / "o")
    assert code == 2 and "would both write" in err


def test_a_read_only_output_folder_is_a_clear_error(tmp_path, input_dir, capsys):
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses new files even to root
        out = Path("/sys")
        if os.access(out, os.W_OK) and _can_create(out):
            pytest.skip("running as root and /sys accepts new files: no read-only folder")
    else:
        out = tmp_path / "read_only"
        out.mkdir()
        out.chmod(0o555)
    before = sorted(p.name for p in out.iterdir())
    code, _, err = _segment(capsys, input_dir / f"{NAMES[0]}.png", "--out", out)
    assert code == 2
    assert err.startswith("samscope: error: output folder") and "not writable" in err
    assert sorted(p.name for p in out.iterdir()) == before


def _can_create(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def test_a_killed_run_resumes_with_the_complete_set_and_nothing_duplicated(
    tmp_path, input_dir, reference, capsys
):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sam_core.cli", "segment", str(input_dir), "--out", str(out)]
    process = subprocess.Popen([*command, *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not list(out.glob("*_labels.tif")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    first = sorted(out.glob("*_labels.tif"))
    assert 1 <= len(first) < len(NAMES)  # killed halfway
    stale = out / f".{NAMES[2]}_labels.tif.dead.tmp"
    stale.write_bytes(b"half a file")  # what a kill during a write leaves behind

    code, stdout, _ = _segment(capsys, input_dir, "--out", out)
    assert code == 0 and f"{len(first)} skipped" in stdout
    assert sorted(p.name for p in out.glob("*_labels.tif")) == sorted(
        f"{n}_labels.tif" for n in NAMES
    )
    for path in out.glob("*_labels.tif"):
        assert path.read_bytes() == (reference / path.name).read_bytes()


def test_embed_then_segment_with_the_cache(
    tmp_path, input_dir, reference, nuclei_dir, capsys, monkeypatch
):
    import sam_core.embedding_keys
    from sam_core.session import Session

    hashed = []
    digest = sam_core.embedding_keys.plane_digest
    monkeypatch.setattr(
        sam_core.embedding_keys, "plane_digest", lambda *a: hashed.append(1) or digest(*a)
    )

    stack = np.stack([_crop(nuclei_dir, n) for n in NAMES[:2]])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    image = input_dir / f"{NAMES[0]}.png"
    cache = tmp_path / "cache"
    args = ["embed", str(image), str(tmp_path / "stack.tif"), "--cache", str(cache), "-q"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    # one store per plane, named by its pixels (not the file): the stack's first slice holds
    # the image's pixels, so it reuses the image's store
    assert "(image, axes YX): 1 plane(s) computed, 0 already" in stdout
    assert "(stack of 2, axes ZYX): 1 plane(s) computed, 1 already" in stdout
    assert "2 cached, 0 failed" in stdout
    assert len(hashed) == 3  # each plane's pixels hashed once
    session = Session("vit_t")
    key = session.embedding_key(session.load(image))
    assert (cache / f"{key}.zarr" / "zarr.json").is_file()
    assert len(list(cache.glob("*.zarr"))) == 2
    assert main(args) == 0
    out_text = capsys.readouterr().out
    assert "0 plane(s) computed, 1 already" in out_text and "0 plane(s) computed, 2" in out_text
    assert len(list(cache.glob("*.zarr"))) == 2

    out = tmp_path / "out"
    assert _segment(capsys, image, tmp_path / "stack.tif", "--out", out, "--cache", cache)[0] == 0
    assert (out / f"{NAMES[0]}_labels.tif").read_bytes() == (
        reference / f"{NAMES[0]}_labels.tif"
    ).read_bytes()
    labels = tifffile.imread(out / "stack_labels.tif")
    np.testing.assert_array_equal(labels[1], tifffile.imread(reference / f"{NAMES[1]}_labels.tif"))
