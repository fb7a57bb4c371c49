"""Evaluation protocols end to end with real MobileSAM on a few small images, the CLI, and
the edge metrics on constructed maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam_core import Predictor
from sam_core.cli import main
from sam_core.cli_evaluate import MAX_CLICKS as CLI_MAX_CLICKS
from sam_core.errors import ImageError
from sam_core.evaluation import MAX_CLICKS, evaluate_edges, evaluate_prompts, load_eval_set
from sam_core.evaluation.edges import boundary_counts, edge_nms, edge_scores
from sam_core.evaluation.report import write_report


@pytest.fixture(scope="module")
def predictor(vit_t_model):
    return Predictor(vit_t_model, device="cpu")


@pytest.fixture(scope="module")
def fluo_set(nuclei_dir):
    return load_eval_set(nuclei_dir, limit=1)


def test_reads_every_shared_set_format(shared_dir):
    data = shared_dir / "data"
    grabcut = load_eval_set(data / "grabcut", limit=50)
    assert sum(s.ignore is not None and s.ignore.any() for s in grabcut.samples) > 0
    assert all(s.n_instances == 1 for s in grabcut.samples)
    coco = load_eval_set(data / "coco_val2017_multi", names=["000000193245"])
    sample = coco.samples[0]
    assert sample.masks is not None and sample.iscrowd.sum() == 1
    assert len(list(sample.instances())) == sample.n_instances - 1  # crowd left out
    bsds = load_eval_set(data / "bsds500_val", limit=1)
    assert bsds.samples[0].boundaries.shape[0] >= 4
    stardist = load_eval_set(data / "stardist_pkg")
    assert [s.name for s in stardist.samples] == ["img2d"]
    assert stardist.skipped and "3-D" in stardist.skipped[0][1]
    fluo = load_eval_set(data / "dsb2018_fluo_dev", limit=1).samples[0]
    masks = list(fluo.instances())
    assert len(masks) == fluo.n_instances == int(fluo.label_image.max())
    assert not np.any(np.sum(masks, axis=0) > 1)


def test_prompt_protocols_on_real_nuclei(predictor, fluo_set):
    result = evaluate_prompts(predictor, fluo_set, n_clicks=3, objects_per_image=4, seed=1)
    assert result["n_objects"] == 4
    point = result["point"]
    assert 0.6 < point["miou"] <= point["miou_oracle"] <= 1.0
    curve = result["clicks"]["miou_per_click"]
    assert len(curve) == 3 and curve[0] == pytest.approx(point["miou"])
    assert all(0.5 < v <= 1.0 for v in curve)
    assert 1.0 <= result["clicks"]["noc@85"] <= MAX_CLICKS
    assert 0.6 < result["box"]["miou"] <= 1.0
    assert 0.4 < result["noisy_box"]["miou"] <= 1.0
    json.dumps(result)  # JSON-ready


def test_report_files(tmp_path):
    result = {
        "set": "toy",
        "point": {"miou": 0.5, "miou_oracle": 0.75},
        "clicks": {
            "miou_per_click": [0.5, 0.7, 0.8],
            "noc@85": 20.0,
            "nof@85": 1,
            "noc@90": 20.0,
            "nof@90": 1,
        },
    }
    written = write_report([result], tmp_path, stem="t")
    assert {p.name for p in written} == {"t.json", "t.md", "t.csv", "t_clicks.png"}
    assert "| toy | 1-point mIoU (oracle of 3) | 0.7500 |" in (tmp_path / "t.md").read_text()
    assert Image.open(tmp_path / "t_clicks.png").size[0] > 100


def test_edge_metrics_constructed():
    # 400x400: the tolerance is 0.0075 x diagonal = 4.2 px; two annotators one row apart
    boundaries = np.zeros((2, 400, 400), bool)
    boundaries[0, 200, 50:350] = True
    boundaries[1, 201, 50:350] = True
    perfect = boundaries[0].astype(np.float32)
    scores = edge_scores([boundary_counts(perfect, boundaries)])
    assert scores["ODS"] == pytest.approx(1.0)
    assert scores["OIS"] == pytest.approx(1.0)
    far = np.zeros((400, 400), np.float32)
    far[180, 50:350] = 1.0  # 20 px away
    assert edge_scores([boundary_counts(far, boundaries)])["ODS"] == pytest.approx(0.0)
    # half of each annotator's line found, nothing wrong: P = 1, R = 0.5, F = 2/3
    half = np.zeros((400, 400), np.float32)
    half[200, 50:200] = 1.0
    assert edge_scores([boundary_counts(half, boundaries)])["ODS"] == pytest.approx(2 / 3, abs=0.02)
    # a doubled edge against one annotator: tolerance matching counts both lines, one-to-one
    # matching only one of them
    double = np.zeros((400, 400), np.float32)
    double[197, 50:350] = double[203, 50:350] = 1.0
    one = boundaries[:1]
    assert edge_scores([boundary_counts(double, one)])["ODS"] == pytest.approx(1.0)
    strict = edge_scores([boundary_counts(double, one, one_to_one=True)])
    assert strict["ODS"] == pytest.approx(2 / 3)  # P = 0.5, R = 1
    exact = edge_scores([boundary_counts(perfect, boundaries, one_to_one=True)])
    assert exact["ODS"] == pytest.approx(1.0)
    # NMS thins a blurred line to its ridge
    blurred = np.zeros((30, 30), np.float32)
    blurred[14, :], blurred[15, :], blurred[16, :] = 0.5, 1.0, 0.5
    thin = edge_nms(blurred)
    assert np.all(thin[15, 3:-3] == 1.0) and not thin[14, 3:-3].any()


def test_edges_on_one_real_image(predictor, shared_dir):
    bsds = load_eval_set(shared_dir / "data" / "bsds500_val", limit=1)
    result = evaluate_edges(predictor, bsds, points_per_side=4)
    assert 0.2 < result["ODS"] <= 1.0
    assert result["OIS"] >= result["ODS"] - 1e-9
    assert result["ODS"] <= result["tolerance_matching"]["ODS"] + 1e-9


def _tiny_set(root, nuclei_dir, mismatch=False):
    """A 128x128 crop of one fluorescence image and its labels, in the set layout."""
    data = nuclei_dir
    item = json.loads((data / "manifest.json").read_text())["items"][0]
    image = np.asarray(Image.open(data / item["image"]))[:128, :128]
    labels = tifffile.imread(data / item["label"])[:128, : 120 if mismatch else 128]
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(image).save(root / "images" / "crop.png")
    tifffile.imwrite(root / "labels" / "crop.tif", labels)
    return root


def test_cli_evaluate_writes_tables(tmp_path, nuclei_dir, mobilesam_checkpoint, capsys):
    assert CLI_MAX_CLICKS == MAX_CLICKS
    root = _tiny_set(tmp_path / "set", nuclei_dir)
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            str(root),
            "--protocol",
            "point,box",
            "--objects-per-image",
            "3",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "1-point mIoU (most confident)" in printed
    result = json.loads((out / "evaluation.json").read_text())[0]
    assert result["n_objects"] == 3 and 0.5 < result["point"]["miou"] <= 1.0


def test_bad_sets_give_clear_errors(tmp_path, nuclei_dir, capsys):
    root = _tiny_set(tmp_path / "bad", nuclei_dir, mismatch=True)
    with pytest.raises(ImageError, match="label image is 128x120"):
        load_eval_set(root)
    assert main(["evaluate", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "label image is 128x120" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert main(["evaluate", str(root), "--protocol", "nonsense"]) == 2


def test_automatic_masks_ap_on_one_real_image(predictor, fluo_set):
    from sam_core.evaluation import evaluate_automatic, make_generator

    generator = make_generator(predictor, points_per_side=8)
    result = evaluate_automatic(generator, fluo_set, max_dets=(10, 100, 1000))
    assert result["n_instances"] == fluo_set.samples[0].n_instances
    assert result["n_predictions"] > 0
    assert 0.05 < result["AP50"] <= 1.0
    assert 0.0 <= result["AP"] <= result["AP50"]
    assert 0.0 < result["AR@100"] <= 1.0


def test_threshold_search_scores_every_pair_and_picks_the_best(predictor, fluo_set):
    from sam_core.evaluation import make_generator, search_thresholds
    from sam_core.evaluation.coco_metrics import ImageInstances, instance_ap

    generator = make_generator(predictor, points_per_side=8)
    search = search_thresholds(
        generator, fluo_set.samples, iou_grid=(0.5, 0.9), stability_grid=(0.8, 0.95)
    )
    grid = search["grid"]
    assert len(grid) == 4 and search["n_images"] == 1
    best = max(r["AP50"] for r in grid)
    assert search["value"] == best
    chosen = [
        r
        for r in grid
        if (r["pred_iou_thresh"], r["stability_score_thresh"])
        == (search["pred_iou_thresh"], search["stability_score_thresh"])
    ]
    assert chosen and chosen[0]["AP50"] == best
    # ties go to the higher thresholds
    tied = [r for r in grid if r["AP50"] == best]
    assert search["pred_iou_thresh"] == max(r["pred_iou_thresh"] for r in tied)
    # a grid row is the AP of exactly those thresholds (independent recomputation)
    sample = fluo_set.samples[0]
    candidates = generator.compute_candidates(sample.image)
    records = generator.select(candidates, pred_iou_thresh=0.9, stability_score_thresh=0.95)
    gts = np.stack(list(sample.instances()))
    direct = instance_ap(
        [
            ImageInstances(
                gt_masks=gts,
                pred_masks=[r["segmentation"] for r in records],
                pred_scores=np.array([r["predicted_iou"] for r in records]),
            )
        ]
    )
    row = next(
        r for r in grid if r["pred_iou_thresh"] == 0.9 and r["stability_score_thresh"] == 0.95
    )
    assert row["AP50"] == pytest.approx(direct["AP50"])
    with pytest.raises(ValueError, match="floors"):
        search_thresholds(generator, fluo_set.samples, iou_grid=(0.2,))
    with pytest.raises(ValueError, match="metric"):
        search_thresholds(generator, fluo_set.samples, metric="F1")
