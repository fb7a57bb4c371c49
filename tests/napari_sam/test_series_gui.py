"""The "Image series" widget in a real viewer (Xvfb) with real MobileSAM on real nuclei:
open a folder to correct, annotate, move on (saved as you go), read-ahead embedding, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari_sam_helpers import interior_point, screenshot, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]

NAMES = ("00071198d059ba7f", "003cee89357d9fe1")  # two images: two encoder runs in all


@pytest.fixture
def to_correct(nuclei_dir: Path, tmp_path: Path) -> Path:
    """images/ of two nuclei images, labels/ (ground truth) for the second only: the layout
    `samscope export-reviewed` writes for images to correct."""
    root = tmp_path / "to_correct"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in NAMES:
        shutil.copy(nuclei_dir / "images" / f"{name}.png", root / "images")
    shutil.copy(nuclei_dir / "labels" / f"{NAMES[1]}.tif", root / "labels")
    newer = {"schema": "samscope.provenance", "schema_version": 99, "masks": []}
    (root / "labels" / f"{NAMES[1]}.provenance.json").write_text(json.dumps(newer))
    return root


@pytest.fixture
def series(annotator):
    viewer, widget = annotator
    _, series = viewer.window.add_plugin_dock_widget("samscope", "Image series")
    yield viewer, widget, series
    if series._prefetch_worker is not None:
        from samscope_napari import jobs

        jobs.wait_for_jobs(60_000)


def _commit_click(viewer, widget, qtbot, press, yx) -> None:
    widget.helper("SAM points").add([yx])
    wait_idle(qtbot, widget)
    press(viewer, "c")
    wait_idle(qtbot, widget)


def test_series_annotate_move_on_and_resume(
    series, to_correct, tmp_path, nuclei_dir, press, qtbot, errors
):
    from sam_core.series import STATE_FILE
    from sam_core.session import Session
    from samscope_napari.image_source import session_image

    viewer, annotator, widget = series
    out = tmp_path / "out"
    widget.open_series(str(to_correct), str(out))
    assert widget.index == 0 and widget.progress.value() == 0 and widget.progress.maximum() == 2
    assert annotator.image_combo.currentText() == NAMES[0]
    assert annotator.labels_combo.currentText() == "series labels"

    # the next image's embedding is computed in the background, into the shared memory cache
    qtbot.waitUntil(lambda: widget._prefetch_worker is None, timeout=60_000)
    assert 1 in widget._prefetched
    from PIL import Image

    nxt = np.asarray(Image.open(to_correct / "images" / f"{NAMES[1]}.png"))
    assert Session("vit_t", device=None).cached_embedding(session_image(nxt, False)) is not None

    gt = tifffile.imread(nuclei_dir / "labels" / f"{NAMES[0]}.tif")
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    _commit_click(viewer, annotator, qtbot, press, interior_point(gt == ids[np.argmax(sizes)]))
    labels_layer = viewer.layers["series labels"]
    assert set(np.unique(labels_layer.data)) == {0, 1}
    record = labels_layer.metadata["samscope_provenance"][1]
    assert record["kind"] == "prompted" and record["model"]["name"] == "vit_t"
    assert record["preprocessing"]["image"] == str(to_correct / "images" / f"{NAMES[0]}.png")

    annotated = labels_layer.data.copy()
    widget.step(1)  # leaving an edited image saves it
    saved = out / "labels" / f"{NAMES[0]}.tif"
    assert np.array_equal(tifffile.imread(saved), annotated)
    sidecar = json.loads((out / "labels" / f"{NAMES[0]}.provenance.json").read_text())
    assert sidecar["mask_labels"] == [{"label": 1}] and sidecar["masks"][0]["prompts"][
        "point_labels"
    ] == [1]
    assert (out / "images" / f"{NAMES[0]}.png").is_file()
    assert widget.index == 1 and widget.progress.value() == 1
    # image 2 came with labels to correct: they are shown (its sidecar, from a newer samscope,
    # is named in the status and left as it is)
    shown = viewer.layers["series labels"].data
    assert np.array_equal(shown, tifffile.imread(to_correct / "labels" / f"{NAMES[1]}.tif"))
    assert "provenance not loaded" in widget.status_label.text()
    assert annotator.image_combo.currentText() == NAMES[1]
    screenshot(viewer, "napari_series")

    # nothing changed on image 2: moving on does not save it, it stays to do
    widget.step(1)
    assert not (out / "labels" / f"{NAMES[1]}.tif").exists() and widget.progress.value() == 1
    state = json.loads((out / STATE_FILE).read_text())
    assert state["done"] == [NAMES[0]] and state["current"] == NAMES[0]
    back = viewer.layers["series labels"]  # image 1 again: its saved labels and records
    assert np.array_equal(back.data, tifffile.imread(saved))
    assert back.metadata["samscope_provenance"][1]["prompts"] == record["prompts"]

    # opening the folders again resumes on the image you were on; Save + next to do
    widget.go(1)
    widget.open_series(str(to_correct), str(out))
    assert widget.index == 1
    widget.save_and_next()  # image 2 saved as it is (the labels were fine): all done
    assert widget.progress.value() == 2 and widget.index == 1
    assert np.array_equal(
        tifffile.imread(out / "labels" / f"{NAMES[1]}.tif"),
        tifffile.imread(to_correct / "labels" / f"{NAMES[1]}.tif"),
    )
    assert not (to_correct / "labels" / f"{NAMES[0]}.provenance.json").exists()
    newer = json.loads((to_correct / "labels" / f"{NAMES[1]}.provenance.json").read_text())
    assert newer["schema_version"] == 99  # the input folder is never written

    # bad input: a folder without images is a message; the open series stays as it was
    (tmp_path / "empty").mkdir()
    widget.open_series(str(tmp_path / "empty"), str(tmp_path / "out2"))
    assert any("no image files" in e for e in errors) and widget.series.output == out.resolve()
