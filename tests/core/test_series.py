"""sam_core.series: listing a folder to annotate, saved progress, resume, what is next."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core.errors import ImageError, OutputError
from sam_core.series import STATE_FILE, Series, list_series, sidecar_path, write_label_tiff


def _png(path: Path, value: int = 10, hw=(8, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(hw, value, np.uint8)).save(path)
    return path


@pytest.fixture
def to_correct(tmp_path: Path) -> Path:
    """images/ a, b, c (+ a text file); labels/ for b only, with a sidecar."""
    root = tmp_path / "to_correct"
    for name in "abc":
        _png(root / "images" / f"{name}.png")
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "labels").mkdir()
    tifffile.imwrite(root / "labels" / "b.tif", np.eye(8, 9, dtype=np.uint16))
    (root / "labels" / "b.provenance.json").write_text("{}")
    return root


def test_listing_pairs_labels_and_sidecars(to_correct):
    items = list_series(to_correct)
    assert [i.name for i in items] == ["a", "b", "c"]
    assert items[0].labels is None and items[0].sidecar is None
    assert items[1].labels == to_correct / "labels" / "b.tif"
    assert items[1].sidecar == to_correct / "labels" / "b.provenance.json"
    assert sidecar_path("x/labels/q.tif") == Path("x/labels/q.provenance.json")


def test_listing_a_flat_folder_and_bad_folders(tmp_path):
    _png(tmp_path / "flat" / "z.png")
    _png(tmp_path / "flat" / "y.tif")
    assert [i.name for i in list_series(tmp_path / "flat")] == ["y", "z"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        list_series(tmp_path / "empty")
    with pytest.raises(ImageError, match="not found"):
        list_series(tmp_path / "missing")
    _png(tmp_path / "dup" / "a.png")
    _png(tmp_path / "dup" / "a.tif")
    with pytest.raises(ImageError, match="two images named 'a'"):
        list_series(tmp_path / "dup")


def test_output_folder_must_not_be_the_input(to_correct):
    with pytest.raises(OutputError, match="must not be the input"):
        Series(to_correct, to_correct)
    with pytest.raises(OutputError, match="must not be the input"):
        Series(to_correct, to_correct / "images" / "out")


def test_progress_next_to_do_and_resume(to_correct, tmp_path):
    out = tmp_path / "out"
    series = Series(to_correct, out)
    assert len(series) == 3 and series.n_done == 0 and series.resume_index() == 0
    assert series.labels_to_open(1) == (series.items[1].labels, series.items[1].sidecar)
    assert series.labels_to_open(0) == (None, None)
    labels = np.zeros((8, 9), np.uint32)
    labels[2:5, 3:6] = 70000  # does not fit uint16
    path = series.save(1, labels, {}, {"note": "test"})
    assert path == out / "labels" / "b.tif"
    written = tifffile.imread(path)
    assert written.dtype == np.uint32 and np.array_equal(written, labels)
    assert (out / "images" / "b.png").is_file()  # the output is a training set
    assert series.labels_to_open(1) == (path, sidecar_path(path))
    assert series.is_done(1) and series.progress_text() == "1 of 3 done"
    assert series.next_to_do(after=1) == 2 and series.next_to_do() == 0
    series.set_current(2)

    again = Series(to_correct, out)  # resume: where we stopped, what is done
    assert again.resume_index() == 2 and again.n_done == 1
    state = json.loads((out / STATE_FILE).read_text())
    assert state["done"] == ["b"] and state["current"] == "c" and state["images"] == ["a", "b", "c"]
    # every image done → None; a deleted output label file makes its image "to do" again
    for i in (0, 2):
        again.save(i, np.zeros((8, 9), np.uint16))
    assert again.next_to_do() is None and again.n_done == 3
    (out / "labels" / "a.tif").unlink()
    assert again.next_to_do(after=2) == 0 and again.progress_text() == "2 of 3 done"
    assert again.index_of("c") == 2
    with pytest.raises(ImageError, match="no image named"):
        again.index_of("nope")
    for name in "abc":  # the input is never written
        assert not (to_correct / "labels" / f"{name}.provenance.json").exists() or name == "b"
    assert (to_correct / "labels" / "b.provenance.json").read_text() == "{}"


def test_damaged_or_newer_progress_file_is_named(to_correct, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / STATE_FILE).write_text("{not json")
    with pytest.raises(OutputError, match="can't be read"):
        Series(to_correct, out)
    (out / STATE_FILE).write_text(json.dumps({"schema": "samscope.series", "schema_version": 9}))
    with pytest.raises(OutputError, match="newer samscope"):
        Series(to_correct, out)


def test_write_label_tiff_rejects_bad_labels(tmp_path):
    with pytest.raises(ImageError, match="integer ids"):
        write_label_tiff(tmp_path / "x.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(ImageError, match="negative"):
        write_label_tiff(tmp_path / "x.tif", -np.ones((4, 4), np.int32))
    stack = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4)
    assert np.array_equal(tifffile.imread(write_label_tiff(tmp_path / "s.tif", stack)), stack)


def test_labels_and_provenance_round_trip(tmp_path):
    from sam_core.errors import ProvenanceError
    from sam_core.provenance import manual_provenance
    from sam_core.series import read_labels_provenance, write_labels

    labels = np.zeros((6, 7), np.uint32)
    labels[1:3, 1:3], labels[4:6, 4:7] = 3, 5
    records = {
        3: manual_provenance(labels == 3).with_review(class_="nucleus", flags=["uncertain"]),
        5: manual_provenance(labels == 5).to_dict(),  # a layer's metadata holds dicts
        9: manual_provenance(labels == 9),  # id no longer in the labels: left out
    }
    path, sidecar = write_labels(tmp_path / "labels" / "x.tif", labels, records, {"k": 1})
    assert sidecar == tmp_path / "labels" / "x.provenance.json"
    back = read_labels_provenance(path)
    assert sorted(back) == [3, 5]
    assert back[3].review["class"] == "nucleus" and back[3].review["flags"] == ["uncertain"]
    assert back[5].output["area_px"] == 6
    assert json.loads(sidecar.read_text())["mask_labels"] == [{"label": 3}, {"label": 5}]
    sidecar.write_text(
        json.dumps({**json.loads(sidecar.read_text()), "mask_labels": [{"label": 3}]})
    )
    with pytest.raises(ProvenanceError, match="mask_labels"):
        read_labels_provenance(path)
    sidecar.write_text(
        json.dumps({"schema": "samscope.provenance", "schema_version": 99, "masks": []})
    )
    with pytest.raises(ProvenanceError, match="newer"):
        read_labels_provenance(path)
