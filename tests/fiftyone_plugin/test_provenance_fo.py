"""The data engine in FiftyOne (issue 17): detections carry their provenance and replay
bit-identically; an existing segmentation is refined by SAM; reviewed masks export to a
training folder and a folder to correct; labels with provenance come back in as detections.
Real FiftyOne database, real MobileSAM, two 256² nuclei images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fo_helpers import PLUGIN

pytestmark = pytest.mark.fiftyone

STEMS = ("0b2e702f90aee4ff", "6fb82031f7fc5f4f")  # 256² nuclei (the first also in core tests)
DATASET = "samscope-test-engine"


@pytest.fixture(scope="module")
def engine_dataset(nuclei_dir, mobilesam_checkpoint, plugin_ready):
    """Two samples: ground truth masks, 2 box prompts on the first; prompted masks made by the
    plugin's operator on the first (the second has none)."""
    import fiftyone as fo
    import fiftyone.operators as foo

    from samscope_fiftyone.conversion import mask_to_detection

    samples = []
    for i, stem in enumerate(STEMS):
        labels = tifffile.imread(nuclei_dir / "labels" / f"{stem}.tif")
        gts = [mask_to_detection(labels == v, "nucleus") for v in np.unique(labels)[1:4]]
        boxes = [fo.Detection(label="nucleus", bounding_box=g.bounding_box) for g in gts[:2]]
        samples.append(
            fo.Sample(
                filepath=str(nuclei_dir / "images" / f"{stem}.png"),
                ground_truth=fo.Detections(detections=gts),
                boxes=fo.Detections(detections=boxes if i == 0 else []),
            )
        )
    dataset = fo.Dataset(DATASET, overwrite=True)
    dataset.add_samples(samples)
    result = foo.execute_operator(
        f"{PLUGIN}/prompted_masks",
        dataset=dataset,
        params={"prompt_field": "boxes", "label_field": "sam", "delegate": False},
        view=dataset.limit(1),
    )
    assert result.error is None, result.error
    dataset.reload()
    yield dataset
    dataset.delete()


def _hw(sample) -> tuple[int, int]:
    from sam_core.image_io import read_image

    return read_image(sample.filepath).shape[:2]


def test_prompted_detections_replay_bit_identical(engine_dataset):
    from sam_core.provenance import MaskProvenance, mask_digest
    from sam_core.replay import replay
    from samscope_fiftyone.conversion import detection_to_mask

    sample = engine_dataset.first()
    detections = sample["sam"].detections
    assert len(detections) == 2
    for detection in detections:
        record = MaskProvenance.from_dict(detection["samscope_provenance"])
        assert record.kind == "prompted" and record.model["name"] == "vit_t"
        assert record.prompts["box_xyxy"] == pytest.approx(detection["prompt_box"])
        assert record.parameters["multimask_output"] is False  # a box asks for one mask
        stored = detection_to_mask(detection, _hw(sample))
        assert record.output["sha256"] == mask_digest(stored)
        assert np.array_equal(replay(record, sample.filepath), stored)


def test_automatic_detections_carry_provenance(engine_dataset):
    from sam_core.session import Session
    from samscope_fiftyone.automatic import automatic_detections, automatic_generator
    from samscope_fiftyone.conversion import detection_to_mask
    from samscope_fiftyone.inference import sample_image

    session = Session("vit_t")
    sample = engine_dataset.first()
    generator = automatic_generator(session, {"points_per_side": 8})
    detections = automatic_detections(session, sample_image(session, sample), generator)
    assert detections.detections
    for detection in detections.detections:
        record = detection["samscope_provenance"]
        assert record["kind"] == "automatic" and record["parameters"]["points_per_side"] == 8
        assert record["prompts"]["points_xy"] == detection["prompt_points"]
        assert record["output"]["area_px"] == detection_to_mask(detection, _hw(sample)).sum()


def test_refine_operator_on_ground_truth(engine_dataset):
    import fiftyone.operators as foo

    from samscope_fiftyone.conversion import detection_to_mask

    view = engine_dataset.limit(1)
    result = foo.execute_operator(
        f"{PLUGIN}/refine_masks",
        dataset=engine_dataset,
        params={"source_field": "ground_truth", "label_field": "refined", "delegate": False},
        view=view,
    )
    assert result.error is None, result.error
    sample = engine_dataset.first()
    gts = {g.id: detection_to_mask(g, _hw(sample)) for g in sample.ground_truth.detections}
    refined = sample["refined"].detections
    assert len(refined) == len(gts) == 3
    for detection in refined:
        record = detection["samscope_provenance"]
        assert record["kind"] == "refined" and record["review"]["class"] == "nucleus"
        assert record["parameters"]["source"] == {
            "field": "ground_truth",
            "label": detection["refined_from"],
        }
        truth, mask = gts[detection["refined_from"]], detection_to_mask(detection, _hw(sample))
        assert (truth & mask).sum() / (truth | mask).sum() > 0.6
    with pytest.raises(Exception, match="does not exist"):
        from samscope_fiftyone.engine import check_refine_field

        check_refine_field(engine_dataset, "no_such_field")


def test_refine_operator_refuses_its_own_source_and_an_empty_view(engine_dataset):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    uri = f"{PLUGIN}/refine_masks"
    same = {"source_field": "ground_truth", "label_field": "ground_truth", "delegate": False}
    with pytest.raises(ExecutionError, match="must differ from the source field"):
        foo.execute_operator(uri, dataset=engine_dataset, params=same)
    assert len(engine_dataset.first().ground_truth.detections) == 3  # the source is untouched
    empty = engine_dataset.match_tags("no-such-tag")
    params = {"source_field": "ground_truth", "label_field": "refined_2", "delegate": False}
    with pytest.raises(ExecutionError, match="no samples to refine"):
        foo.execute_operator(uri, dataset=engine_dataset, view=empty, params=params)


def test_export_reviewed_then_import_corrections(engine_dataset, tmp_path, capsys):
    from sam_core.cli import main
    from sam_core.cli_engine import label_records
    from sam_core.cli_evaluate import load_labelled_set
    from samscope_fiftyone.conversion import detection_to_mask
    from samscope_fiftyone.engine import EngineFieldError, export_reviewed, import_labels
    from samscope_fiftyone.review import MaskRef, RatingError, save_flags, save_rating

    first, second = engine_dataset.first(), engine_dataset.last()
    good, bad = first["sam"].detections
    save_rating(engine_dataset, MaskRef(first.id, "sam", good.id), 9, "alice")
    save_rating(engine_dataset, MaskRef(first.id, "sam", good.id), 8, "bob")
    save_rating(engine_dataset, MaskRef(first.id, "sam", bad.id), 3, "alice")
    save_flags(engine_dataset, MaskRef(first.id, "sam", good.id), ["reviewed"], label="round")
    with pytest.raises(RatingError, match="unknown review flag"):
        save_flags(engine_dataset, MaskRef(first.id, "sam", good.id), ["blurry"])

    # a ratings field that no longer exists: a clear message, nothing written
    with pytest.raises(EngineFieldError, match=r"'gone' does not exist.*Mask fields there"):
        export_reviewed(engine_dataset, "gone", 7, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    out = tmp_path / "engine"
    capsys.readouterr()
    argv = ["export-reviewed", "--dataset", DATASET, "--field", "sam", "--min-rating", "7"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["training_images"] == 1 and summary["accepted_masks"] == 1
    assert summary["to_correct"] == 2  # a low-rated mask, and a sample without masks

    # training folder: the accepted mask only, with its provenance and rating
    stem0, stem1 = (Path(s.filepath).stem for s in (first, second))
    labels = tifffile.imread(out / "labels" / f"{stem0}.tif")
    hw = _hw(first)
    assert np.array_equal(labels == 1, detection_to_mask(good, hw)) and labels.max() == 1
    record = label_records(out / "labels" / f"{stem0}.tif")[1]
    assert record.kind == "prompted"
    assert record.review == {"class": "round", "flags": ["reviewed"], "rating": 8.5}
    assert (out / "images" / f"{stem0}.png").read_bytes() == Path(first.filepath).read_bytes()
    assert [s.name for s in load_labelled_set(out, False).samples] == [stem0]  # finetune reads it

    # to correct: every mask of the first sample, the image alone for the second
    fix = out / "to_correct"
    assert sorted(p.name for p in (fix / "images").iterdir()) == sorted(
        [f"{stem0}.png", f"{stem1}.png"]
    )
    assert tifffile.imread(fix / "labels" / f"{stem0}.tif").max() == 2
    assert not (fix / "labels" / f"{stem1}.tif").exists()
    # a correction made there (class + flag, as napari's annotator writes) is never overwritten
    side = fix / "labels" / f"{stem0}.provenance.json"
    document = json.loads(side.read_text())
    document["masks"][1]["review"] = {"class": "dividing", "flags": ["uncertain"], "rating": None}
    side.write_text(json.dumps(document))
    again = export_reviewed(engine_dataset, "sam", 7, out)
    assert again["kept_corrections"] == 1
    assert json.loads(side.read_text())["masks"][1]["review"]["class"] == "dividing"

    # back into FiftyOne: class, flags and provenance as detection attributes
    result = import_labels(fix, engine_dataset, "corrected")
    assert result == {
        "imported": 1,
        "added_samples": 0,
        "objects": 2,
        "without_labels": 1,
        "field": "corrected",
    }
    engine_dataset.reload()
    corrected = engine_dataset.first()["corrected"].detections
    flagged = [d for d in corrected if d.label == "dividing"]
    assert len(flagged) == 1 and flagged[0]["review_flags"] == ["uncertain"]
    assert flagged[0]["samscope_provenance"]["kind"] == "prompted"
    assert all(d["samscope_provenance"]["model"]["name"] == "vit_t" for d in corrected)
