"""The data engine's loop end to end (issue 17, paper §4) on real nuclei with real MobileSAM, a
real napari viewer (Xvfb) and a real FiftyOne database:

napari series annotator (clicks, commits) -> labels + provenance -> ``samscope replay`` ->
``samscope finetune`` (run1) -> FiftyOne automatic masks with run1 -> ratings through the
``rate_mask`` operator -> ``samscope export-reviewed`` -> the series annotator opens
``to_correct/`` -> corrections saved -> retrain from run1's model (run2).

Every hand-off's files are checked, and that each mask's record keeps naming the model (and
its weights' sha256), the prompts and the parameters that made it.

It lives in tests/fiftyone_plugin/ (not tests/napari_sam/) because FiftyOne reads its
environment once, at import, and this folder's conftest sets it (private database and plugins
folder) before anything imports fiftyone; the napari viewer comes from napari's own
`make_napari_viewer` fixture, available everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fo_helpers import PLUGIN

# 256² nuclei; list order of the series. The second gets low ratings and goes to correct.
STEMS = ("0b2e702f90aee4ff", "6fb82031f7fc5f4f")
TO_FIX, ACCEPTED = STEMS
DATASET = "samscope-test-loop"
GRID = 8  # automatic masks: 8 x 8 points
# the fastest fine-tuning that still runs the whole path (see tests/core/test_training.py)
TINY = [
    *("--val-count", "1", "--epochs", "1", "--trainable", "decoder", "--objects-per-step", "2"),
    *("--point-rounds", "1", "--refine-rounds", "0", "--warmup", "1", "--no-threshold-search"),
    *("--device", "cpu"),
]


def _interior_yx(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) of the pixel of a (H, W) bool mask farthest from its border."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return float(y), float(x)


def _largest(gt: np.ndarray, k: int) -> list[int]:
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    return [int(i) for i in ids[np.argsort(-sizes)][:k]]


def _wait_idle(qtbot, widget) -> None:
    qtbot.waitUntil(
        lambda: (
            widget._preview_worker is None
            and widget._long_worker is None
            and not widget._preview_pending
        ),
        timeout=120_000,
    )


def _commit_click(viewer, widget, qtbot, yx) -> None:
    """One positive click at (y, x) through the points helper, then C (commit)."""
    widget.helper("SAM points").add([yx])
    _wait_idle(qtbot, widget)
    assert viewer.window._qt_viewer._key_map_handler.press_key("c")
    qtbot.wait(10)
    _wait_idle(qtbot, widget)


class _Stages:
    """Seconds per hand-off, printed at the end (``pytest -s``) and written as JSON to
    ``$SAMSCOPE_LOOP_TIMINGS`` when set (benchmarks/bench_data_engine_loop.py)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.rows.append((name, round(now - self._last, 2)))
        self._last = now

    def report(self) -> None:
        total = sum(s for _, s in self.rows)
        print("\n".join(f"{name:<32} {sec:8.2f} s" for name, sec in self.rows))
        print(f"{'loop total':<32} {total:8.2f} s")
        target = os.environ.get("SAMSCOPE_LOOP_TIMINGS")
        if target:
            Path(target).write_text(json.dumps({"stages": dict(self.rows), "total_s": total}))


def _check_record(record, sha: str, kind: str, **parameters) -> None:
    """The record names its model by weights sha256, its prompts and its parameters."""
    assert record.kind == kind
    assert record.model["checkpoint_sha256"] == sha
    assert record.prompts["points_xy"] and record.prompts["point_labels"]
    for key, value in parameters.items():
        assert record.parameters[key] == value, key
    assert record.samscope_version and record.created


@pytest.fixture
def series_annotator(make_napari_viewer, vit_t_model, qtbot):
    """(viewer, annotator widget, series widget), opened through the plugin's manifest, with
    the session's MobileSAM as the plugin's "vit_t" predictor."""
    from sam_core import Predictor
    from sam_core.session import use_predictor
    from samscope_napari import jobs

    use_predictor("vit_t", Predictor(vit_t_model, device="cpu"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 720)
    _, annotator = viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
    _, series = viewer.window.add_plugin_dock_widget("samscope", "Image series")
    yield viewer, annotator, series
    annotator.cancel()
    qtbot.waitUntil(
        lambda: annotator._preview_worker is None and annotator._long_worker is None,
        timeout=60_000,
    )
    jobs.wait_for_jobs(60_000)


@pytest.mark.gui
@pytest.mark.fiftyone
@pytest.mark.slow
def test_annotate_train_segment_review_export_correct_retrain(
    series_annotator, nuclei_dir, mobilesam_checkpoint, plugin_ready, qtbot, tmp_path, capsys
):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    from sam_core.checkpoints import sha256_of
    from sam_core.cli import main
    from sam_core.cli_engine import label_records
    from sam_core.provenance import MaskProvenance, mask_digest
    from sam_core.registry import get_spec
    from sam_core.replay import replay
    from sam_core.series import STATE_FILE
    from samscope_fiftyone.conversion import detection_to_mask

    viewer, annotator, series = series_annotator
    stages = _Stages()
    vit_t_sha = get_spec("vit_t").sha256
    raw, engine = tmp_path / "raw", tmp_path / "engine"
    labelled, corrected = engine / "labelled", engine / "corrected"
    (raw / "images").mkdir(parents=True)
    gts = {}
    for stem in STEMS:
        shutil.copyfile(nuclei_dir / "images" / f"{stem}.png", raw / "images" / f"{stem}.png")
        gts[stem] = tifffile.imread(nuclei_dir / "labels" / f"{stem}.tif")

    # -- 1. napari: annotate both images with clicks; the series widget saves as it goes
    series.open_series(str(raw), str(labelled))
    clicks = {}
    for stem in STEMS:
        assert annotator.image_combo.currentText() == stem
        clicks[stem] = [_interior_yx(gts[stem] == i) for i in _largest(gts[stem], 2)]
        for yx in clicks[stem]:
            _commit_click(viewer, annotator, qtbot, yx)
        assert set(np.unique(viewer.layers["series labels"].data)) == {0, 1, 2}
        series.save_and_next()
    assert series.progress.value() == 2
    assert json.loads((labelled / STATE_FILE).read_text())["done"] == list(STEMS)
    for stem in STEMS:
        label_path = labelled / "labels" / f"{stem}.tif"
        saved = tifffile.imread(label_path)
        assert set(np.unique(saved)) == {0, 1, 2}
        assert (labelled / "images" / f"{stem}.png").read_bytes() == (
            raw / "images" / f"{stem}.png"
        ).read_bytes()
        records = label_records(label_path)
        assert sorted(records) == [1, 2]
        for label, (y, x) in zip((1, 2), clicks[stem], strict=True):
            _check_record(records[label], vit_t_sha, "prompted", multimask_output=True)
            assert records[label].prompts["points_xy"] == [[x, y]]
            assert records[label].output["sha256"] == mask_digest(saved == label)
    stages.done("napari: annotate 2 images, save")
    # the napari commits, from the saved sidecar, replay bit for bit (the CLI)
    capsys.readouterr()
    sidecar = labelled / "labels" / f"{ACCEPTED}.provenance.json"
    assert main(["replay", str(sidecar), "--device", "cpu"]) == 0
    assert "2 of 2 identical" in capsys.readouterr().out

    stages.done("samscope replay (napari sidecar)")
    # -- 2. samscope finetune -> run1: weights + a card naming its base and data
    run1 = tmp_path / "run1"
    args = ["finetune", str(labelled), *TINY, "--out", str(run1), "--model", "vit_t"]
    assert main(args) == 0
    card1 = json.loads((run1 / "model.json").read_text())
    assert card1["base_model"] == "vit_t" and card1["base_sha256"] == vit_t_sha
    assert card1["epochs_done"] == 1 and card1["config"]["trainable"] == "decoder"
    assert sorted(card1["data"]["train_images"] + card1["data"]["val_images"]) == list(STEMS)
    run1_sha = sha256_of(run1 / "model.pth")
    # a finished run is not silently "resumed" on new labels: the message says what to do
    capsys.readouterr()
    assert main(args) == 2
    assert f"--model {run1 / 'model.pth'}" in capsys.readouterr().err

    stages.done("samscope finetune run1")
    # -- 3. FiftyOne: automatic masks with run1 in a real dataset, through the operator
    dataset = fo.Dataset(DATASET, overwrite=True)
    try:
        dataset.add_samples(
            [fo.Sample(filepath=str(nuclei_dir / "images" / f"{s}.png")) for s in STEMS]
        )
        params = {
            "model": str(run1 / "model.pth"),
            "device": "cpu",
            "label_field": "sam_auto",
            "points_per_side": GRID,
            "delegate": False,
        }
        result = foo.execute_operator(f"{PLUGIN}/automatic_masks", dataset=dataset, params=params)
        assert result.error is None, result.error
        assert result.result["failed"] == 0
        dataset.reload()
        by_stem = {Path(s.filepath).stem: s for s in dataset}
        hw = gts[TO_FIX].shape
        for stem in STEMS:
            detections = by_stem[stem]["sam_auto"].detections
            assert detections, f"no automatic masks on {stem}"
            for detection in detections:
                record = MaskProvenance.from_dict(detection["samscope_provenance"])
                _check_record(record, run1_sha, "automatic", points_per_side=GRID)
                assert record.model["card"]["base_model"] == "vit_t"
                assert record.output["sha256"] == mask_digest(detection_to_mask(detection, hw))
        # a mask of the fine-tuned model replays bit for bit
        detection = by_stem[TO_FIX]["sam_auto"].detections[0]
        record = MaskProvenance.from_dict(detection["samscope_provenance"])
        assert np.array_equal(
            replay(record, by_stem[TO_FIX].filepath), detection_to_mask(detection, hw)
        )

        stages.done("FiftyOne automatic masks + replay")

        # -- 4. ratings through the review operator: ACCEPTED all 9, TO_FIX's first mask 3
        def rate(sample, detection, rating: int):
            return foo.execute_operator(
                f"{PLUGIN}/rate_mask",
                dataset=dataset,
                params={
                    "sample_id": sample.id,
                    "label_field": "sam_auto",
                    "detection_id": detection.id,
                    "rating": rating,
                    "reviewer": "loop",
                    "seconds": 1.0,
                },
            )

        accepted_n = len(by_stem[ACCEPTED]["sam_auto"].detections)
        for detection in by_stem[ACCEPTED]["sam_auto"].detections:
            assert rate(by_stem[ACCEPTED], detection, 9).error is None
        assert rate(by_stem[TO_FIX], by_stem[TO_FIX]["sam_auto"].detections[0], 3).error is None
        fix_n = len(by_stem[TO_FIX]["sam_auto"].detections)

        stages.done("rate_mask operator")
        # -- 5. samscope export-reviewed: training folder + the folder to correct
        capsys.readouterr()
        argv = ["export-reviewed", "--dataset", DATASET, "--field", "sam_auto"]
        assert main([*argv, "--min-rating", "7", "--out", str(engine)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["training_images"] == 1 and summary["accepted_masks"] == accepted_n
        assert summary["to_correct"] == 1

        # a rating on a mask field that no longer exists: a message naming it, nothing stored
        sample, stale = by_stem[TO_FIX], by_stem[TO_FIX]["sam_auto"].detections[0]
        dataset.delete_sample_field("sam_auto")
        with pytest.raises(ExecutionError, match=r"no detection \w+ in field 'sam_auto'"):
            rate(sample, stale, 5)
    finally:
        dataset.delete()
    accepted_records = label_records(engine / "labels" / f"{ACCEPTED}.tif")
    assert len(accepted_records) == accepted_n
    for record in accepted_records.values():
        _check_record(record, run1_sha, "automatic", points_per_side=GRID)
        assert record.review["rating"] == 9
    to_correct = engine / "to_correct"
    assert sorted(p.name for p in (to_correct / "images").iterdir()) == [f"{TO_FIX}.png"]
    fix_labels = tifffile.imread(to_correct / "labels" / f"{TO_FIX}.tif")
    assert fix_labels.max() == fix_n

    stages.done("export-reviewed")
    # -- 6. the series annotator opens to_correct: its masks and their records come along
    series.open_series(str(to_correct), str(corrected))
    assert annotator.image_combo.currentText() == TO_FIX
    layer = viewer.layers["series labels"]
    assert np.array_equal(layer.data, fix_labels)
    shown = layer.metadata["samscope_provenance"]
    assert sorted(shown) == list(range(1, fix_n + 1))
    assert {shown[i]["model"]["checkpoint_sha256"] for i in shown} == {run1_sha}
    ratings = sorted(
        shown[i]["review"]["rating"] for i in shown if shown[i]["review"]["rating"] is not None
    )
    assert ratings == [3]
    # correct: click a nucleus the automatic masks missed (or the largest free one)
    free = [i for i in _largest(gts[TO_FIX], 20) if not np.any(layer.data[gts[TO_FIX] == i])]
    target = free[0] if free else _largest(gts[TO_FIX], 1)[0]
    _commit_click(viewer, annotator, qtbot, _interior_yx(gts[TO_FIX] == target))
    series.save_and_next()
    corrected_labels = tifffile.imread(corrected / "labels" / f"{TO_FIX}.tif")
    corrected_records = label_records(corrected / "labels" / f"{TO_FIX}.tif")
    assert sorted(corrected_records) == sorted(int(v) for v in np.unique(corrected_labels) if v)
    kinds = {r.kind: r for r in corrected_records.values()}
    assert set(kinds) == {"automatic", "prompted"}
    _check_record(kinds["automatic"], run1_sha, "automatic", points_per_side=GRID)
    _check_record(kinds["prompted"], vit_t_sha, "prompted")

    stages.done("series: open to_correct, correct")
    # -- 7. retrain: accepted + corrected in one folder, fine-tuned from run1's model
    for part in ("images", "labels"):
        shutil.copytree(corrected / part, engine / part, dirs_exist_ok=True)
    run2 = tmp_path / "run2"
    model1 = str(run1 / "model.pth")
    assert main(["finetune", str(engine), *TINY, "--out", str(run2), "--model", model1]) == 0
    card2 = json.loads((run2 / "model.json").read_text())
    assert card2["base_model"] == model1 and card2["base_sha256"] == run1_sha
    assert sorted(card2["data"]["train_images"] + card2["data"]["val_images"]) == sorted(STEMS)
    assert sha256_of(run2 / "model.pth") != run1_sha
    stages.done("samscope finetune run2 (retrain)")
    stages.report()


def test_finetune_on_images_without_labels_says_which(nuclei_dir, tmp_path, capsys):
    """A folder with images/ and no labels (e.g. to_correct/ before anyone corrected it) is
    refused by `samscope finetune` naming the missing label file; nothing is written."""
    from sam_core.cli import main

    folder = tmp_path / "to_correct"
    (folder / "images").mkdir(parents=True)
    for stem in STEMS:
        shutil.copyfile(nuclei_dir / "images" / f"{stem}.png", folder / "images" / f"{stem}.png")
    capsys.readouterr()
    assert main(["finetune", str(folder), "--out", str(tmp_path / "run")]) == 2
    assert f"no ground truth (labels/{STEMS[0]}.tif)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in (folder / "images").iterdir()) == [f"{s}.png" for s in STEMS]
