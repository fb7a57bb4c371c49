"""Provenance records (issue 17): the schema round-trips, refuses what it can't read with a
message that says why, and a real prompted mask's record names its model, prompts, image and
parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from sam_core.errors import ProvenanceError, SamscopeError
from sam_core.provenance import (
    SCHEMA,
    SCHEMA_VERSION,
    MaskProvenance,
    manual_provenance,
    mask_digest,
    predict_best_recorded,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

STEM = "0b2e702f90aee4ff"  # 256² nuclei, 5 objects (also the FiftyOne tests' first image)


@pytest.fixture(scope="module")
def session_image(nuclei_dir, mobilesam_checkpoint):
    """(session, image, embedding, path, labels) of one real image, embedded once."""
    from sam_core.session import Session

    session = Session("vit_t")
    path = nuclei_dir / "images" / f"{STEM}.png"
    image = session.load(path)
    labels = tifffile.imread(nuclei_dir / "labels" / f"{STEM}.tif")
    return session, image, session.embed(image), path, labels


def _record(**review) -> MaskProvenance:
    mask = np.zeros((8, 9), bool)
    mask[2:5, 3:7] = True
    return manual_provenance(mask, image_path="a.png", review=review or None)


def test_dict_round_trip_and_json():
    record = _record()
    data = record.to_dict()
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert list(data)[:2] == ["schema", "schema_version"]
    assert MaskProvenance.from_dict(json.loads(json.dumps(data))) == record
    assert data["output"]["area_px"] == 12 and data["output"]["shape"] == [8, 9]
    assert data["created"].endswith("Z")


def test_sidecar_round_trip(tmp_path):
    records = [_record(), _record(**{"class": "nucleus"})]
    path = write_sidecar(sidecar_path(tmp_path / "img_labels.tif"), records, {"output": "x"})
    assert path.name == "img_labels.provenance.json"
    assert read_sidecar(path) == records
    assert json.loads(path.read_text())["output"] == "x"
    with pytest.raises(ProvenanceError, match="reserved"):
        write_sidecar(tmp_path / "y.json", records, {"masks": []})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": SCHEMA_VERSION + 1}, "newer than this samscope.*upgrade"),
        ({"schema": "other.schema"}, "not a samscope provenance record"),
        ({"schema_version": "1"}, "integer"),
        ({"kind": "guessed"}, "kind 'guessed'"),
        ({"prompts": [1, 2]}, "'prompts' must be an object"),
    ],
)
def test_unreadable_records_say_why(change, message):
    data = {**_record().to_dict(), **change}
    with pytest.raises(ProvenanceError, match=message):
        MaskProvenance.from_dict(data)


def test_missing_fields_are_named():
    data = _record().to_dict()
    del data["model"], data["created"]
    with pytest.raises(ProvenanceError, match="model, created"):
        MaskProvenance.from_dict(data)


def test_newer_sidecar_and_bad_files(tmp_path):
    path = write_sidecar(tmp_path / "a.provenance.json", [_record()])
    document = json.loads(path.read_text())
    document["schema_version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(ProvenanceError, match=r"schema version 99.*upgrade samscope"):
        read_sidecar(path)
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ProvenanceError, match="not a readable JSON"):
        read_sidecar(tmp_path / "b.json")
    with pytest.raises(ProvenanceError, match="no provenance file"):
        read_sidecar(tmp_path / "missing.json")
    assert issubclass(ProvenanceError, SamscopeError)


def test_review_changes_are_checked():
    record = _record().with_review(class_="nucleus", flags=["uncertain"], rating=7)
    assert record.review == {"class": "nucleus", "flags": ["uncertain"], "rating": 7}
    assert record.with_review(flags=["reviewed", "reviewed"]).review["flags"] == ["reviewed"]
    with pytest.raises(ProvenanceError, match="unknown review flag"):
        record.with_review(flags=["blurry"])
    with pytest.raises(ProvenanceError, match="1-10"):
        record.with_review(rating=11)
    with pytest.raises(ProvenanceError, match="unknown review field"):
        record.with_review(colour="red")


def test_mask_digest_is_bitwise():
    mask = np.zeros((5, 7), bool)
    other = mask.copy()
    other[4, 6] = True
    assert mask_digest(mask) == mask_digest(mask.astype(np.uint8))
    assert mask_digest(mask) != mask_digest(other)
    assert mask_digest(mask) != mask_digest(np.zeros((7, 5), bool))


def test_prompted_record_names_model_prompts_image(session_image):
    session, image, embedding, path, labels = session_image
    ys, xs = np.nonzero(labels == 1)
    point = [[float(xs.mean()), float(ys.mean())]]
    mask, score, record = predict_best_recorded(session, image, embedding, point, [1])
    assert record.kind == "prompted"
    assert record.prompts["points_xy"] == point and record.prompts["point_labels"] == [1]
    sha = session.model_id.split(":")[0]
    assert record.model == {
        "name": "vit_t",
        "source": "vit_t",
        "checkpoint_sha256": sha,
        "card": None,
    }
    assert record.preprocessing["image"] == str(path)
    assert record.preprocessing["image_hw"] == [256, 256]
    assert record.preprocessing["tiling"] is None and record.preprocessing["z"] is None
    assert record.parameters["multimask_output"] is True  # one click: best of 3
    assert 0 <= record.parameters["mask_index"] < 3
    assert record.output["sha256"] == mask_digest(mask)
    assert 0.5 < score <= 1.2 and mask[int(point[0][1]), int(point[0][0])]
