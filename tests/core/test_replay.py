"""Replay (issue 17): masks regenerated from their provenance are bit-identical with the same
model and version (a CLI prompted run, a CLI automatic run in TIFF and COCO, a refined
segmentation); a changed model, version or setting is named, never silently used; a missing
model or a newer schema gives a clear message."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from sam_core.cli import main
from sam_core.cli_engine import label_records, read_provenance_file
from sam_core.errors import ProvenanceError
from sam_core.image_io import read_image
from sam_core.provenance import mask_digest, read_sidecar
from sam_core.replay import ReplayMismatch, ReplayWarning, replay

STEM = "0b2e702f90aee4ff"  # 256² nuclei, 5 objects
GRID = "8"  # 8x8 automatic grid: a few masks, seconds on a CPU


COMMON = ["--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def runs(nuclei_dir, mobilesam_checkpoint, tmp_path_factory):
    """One CLI prompted run on a copy of the image."""
    out = tmp_path_factory.mktemp("replay")
    image = out / f"{STEM}.png"
    shutil.copyfile(nuclei_dir / "images" / f"{STEM}.png", image)
    labels = tifffile.imread(nuclei_dir / "labels" / f"{STEM}.tif")
    ys, xs = np.nonzero(labels == 2)
    point = f"{xs.mean():.1f},{ys.mean():.1f}"
    assert (
        main(["predict", str(image), "--point", point, "--out", str(out / "m.png"), *COMMON]) == 0
    )
    return {"dir": out, "image": image, "labels": labels}


@pytest.fixture(scope="module")
def automatic_runs(runs):
    """`samscope segment` of the same image, as a label TIFF and as COCO (embedding shared)."""
    seg = ["segment", str(runs["image"]), "--points-per-side", GRID, *COMMON]
    assert main([*seg, "--out", str(runs["dir"] / "tif")]) == 0
    assert main([*seg, "--out", str(runs["dir"] / "coco"), "--format", "coco"]) == 0
    return runs


def test_cli_prompted_replay_is_bit_identical(runs, capsys):
    out = runs["dir"]
    sidecar = out / "m.provenance.json"
    (record,) = read_sidecar(sidecar)
    assert record.kind == "prompted" and record.model["name"] == "vit_t"
    assert record.preprocessing["image"] == str(runs["image"].resolve())
    written = read_image(out / "m.png") > 0
    assert record.output["sha256"] == mask_digest(written)
    assert np.array_equal(replay(record), written)
    capsys.readouterr()
    assert main(["replay", str(sidecar), "--out", str(out / "again")]) == 0
    assert "1 of 1 identical" in capsys.readouterr().out
    assert np.array_equal(read_image(out / "again" / "mask_0000.png") > 0, written)


@pytest.mark.slow
def test_cli_automatic_replay_is_bit_identical(automatic_runs, capsys):
    runs = automatic_runs
    tif = runs["dir"] / "tif" / f"{STEM}_labels.tif"
    labels = tifffile.imread(tif)
    by_label = label_records(tif)
    assert len(by_label) >= 2 and set(by_label) == set(range(1, len(by_label) + 1))
    record = by_label[1]
    assert record.kind == "automatic" and record.parameters["points_per_side"] == int(GRID)
    assert record.parameters["mode"] == "grid" and record.parameters["pred_iou_thresh"] == 0.88
    capsys.readouterr()
    sidecar = tif.with_name(f"{STEM}_labels.provenance.json")
    assert main(["replay", str(sidecar), "--out", str(tif.parent / "again")]) == 0
    n = len(by_label)
    assert f"{n} of {n} identical" in capsys.readouterr().out
    # label 1's pixels all belong to its replayed mask (other masks may cover parts of it)
    assert (read_image(tif.parent / "again" / "mask_0000.png") > 0)[labels == 1].all()


@pytest.mark.slow
def test_coco_annotations_carry_provenance_and_replay(automatic_runs, capsys):
    runs = automatic_runs
    coco = runs["dir"] / "coco" / f"{STEM}_masks.json"
    document = json.loads(coco.read_text())
    assert all(a["samscope_provenance"]["kind"] == "automatic" for a in document["annotations"])
    records = read_provenance_file(coco)
    assert len(records) == len(document["annotations"])
    capsys.readouterr()
    assert main(["replay", str(coco)]) == 0
    assert f"{len(records)} of {len(records)} identical" in capsys.readouterr().out


def test_changes_are_named_not_used(runs, tmp_path, capsys):
    document = json.loads((runs["dir"] / "m.provenance.json").read_text())
    document["masks"][0]["model"]["checkpoint_sha256"] = "0" * 64
    document["masks"][0]["samscope_version"] = "0.0.1"
    changed = tmp_path / "changed.provenance.json"
    changed.write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["replay", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "model checkpoint_sha256: 000000000000… -> " in err
    assert "samscope_version: 0.0.1 -> " in err and "--allow-changes" in err
    assert main(["replay", str(changed), "--allow-changes"]) == 0
    assert "warning: mask 0: replaying with changes" in capsys.readouterr().out
    record = read_sidecar(changed)[0]
    with pytest.warns(ReplayWarning, match="checkpoint_sha256"):
        replay(record, allow_changes=True)
    # the image's pixels are part of what is checked
    with pytest.raises(ReplayMismatch, match=r"image pixels \(plane_digest\)"):
        replay(read_sidecar(runs["dir"] / "m.provenance.json")[0], 255 - read_image(runs["image"]))


def test_missing_model_and_newer_schema_messages(runs, tmp_path, capsys):
    document = json.loads((runs["dir"] / "m.provenance.json").read_text())
    document["masks"][0]["model"]["source"] = str(tmp_path / "gone" / "model.pth")
    gone = tmp_path / "gone.provenance.json"
    gone.write_text(json.dumps(document))
    with pytest.raises(ProvenanceError, match="no such checkpoint file exists here"):
        replay(read_sidecar(gone)[0])
    document["schema_version"] = 2
    newer = tmp_path / "newer.provenance.json"
    newer.write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["replay", str(newer)]) == 2
    assert "schema version 2, newer than this samscope" in capsys.readouterr().err


def test_refined_segmentation_replays(runs, mobilesam_checkpoint):
    from sam_core.refine import refine_instances
    from sam_core.session import Session

    session = Session("vit_t")
    labels = runs["labels"].copy()
    labels[labels > 2] = 0  # two objects keep the test quick
    result = refine_instances(session, runs["image"], labels, source={"layer": "gt"})
    assert list(result.labels) == [1, 2] and result.masks.shape == (2, 256, 256)
    for mask, label, record in zip(result.masks, result.labels, result.records, strict=True):
        truth = labels == label
        assert (mask & truth).sum() / (mask | truth).sum() > 0.6
        assert record.kind == "refined" and record.parameters["source"]["label"] == label
        assert record.prompts["mask_prompt_rle"] is not None
        assert np.array_equal(replay(record, session=session), mask)
