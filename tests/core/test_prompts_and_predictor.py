"""Prompt validation and the `Predictor` API, with the real MobileSAM weights on one small
fluorescence image (256x256, 13 nuclei) embedded once for the module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from sam_core import ImageEmbedding, NotReadyError, Predictor, PromptError

pytestmark = pytest.mark.slow  # real weights, one set_image (a few seconds on a CPU)

NUCLEUS_A = (154, 119)  # interior-most pixels (x, y) of two nuclei of the first image
NUCLEUS_B = (116, 130)


@pytest.fixture(scope="module")
def sample(nuclei_dir, read_rgb):
    folder = nuclei_dir
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} does not exist")
    item = json.loads(manifest.read_text(encoding="utf-8"))["items"][0]
    image = read_rgb(folder / item["image"])
    labels = tifffile.imread(folder / item["label"])
    assert image.shape[:2] == labels.shape == (256, 256)
    return image, labels


@pytest.fixture(scope="module")
def predictor(vit_t_model, sample) -> Predictor:
    predictor = Predictor(vit_t_model, device="cpu")
    predictor.set_image(sample[0])
    return predictor


def _label_at(labels: np.ndarray, xy: tuple[int, int]) -> int:
    return int(labels[xy[1], xy[0]])


# --------------------------------------------------------------------------- readiness


def test_predict_before_set_image(vit_t_model) -> None:
    fresh = Predictor(vit_t_model, device="cpu")
    assert not fresh.is_image_set
    with pytest.raises(NotReadyError, match="set_image"):
        fresh.predict(points=[[10, 10]], labels=[1])
    with pytest.raises(NotReadyError):
        _ = fresh.embedding


def test_reset_image(vit_t_model, predictor) -> None:
    other = Predictor(vit_t_model, device="cpu")
    other.set_embedding(predictor.embedding)
    assert other.is_image_set
    other.reset_image()
    with pytest.raises(NotReadyError):
        other.predict(points=[[10, 10]])


# --------------------------------------------------------------------------- bad prompts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[300, 10]], "labels": [1]}, r"outside the 256x256 .*\(x, y\)"),
        ({"points": [[10, -1]], "labels": [1]}, "outside"),
        ({"points": [[10, 10], [10, 256]], "labels": [1, 1]}, "1 point"),
        ({"box": [50, 50, 40, 60]}, "inverted or has zero area"),
        ({"box": [10, 10, 10, 20]}, "inverted or has zero area"),
        ({"box": [10, 30, 20, 30]}, "x0 < x1 and y0 < y1"),
        ({"box": [300, 300, 400, 400]}, "lies outside"),
        ({"box": [-50, 10, -10, 20]}, "lies outside"),
        ({"box": [1, 2, 3]}, r"box must be \(4,\)"),
        ({"points": [[10, 10], [20, 20]], "labels": [1]}, "one label .* per point"),
        ({"points": [[10, 10]], "labels": [2]}, r"labels must be 1 \(positive\) or 0"),
        ({"points": [[10, 10]], "labels": [-1]}, "labels must be 1"),
        ({"points": [[np.nan, 10]], "labels": [1]}, "NaN or infinite"),
        ({"points": [[np.inf, 10]]}, "NaN or infinite"),
        ({"box": [0, 0, np.nan, 10]}, "NaN or infinite"),
        ({"points": [[1, 2, 3]]}, r"\(N, 2\)"),
        ({"points": [["a", "b"]]}, "must be numbers"),
        ({"mask_input": np.zeros((1, 128, 128))}, "256x256"),
        ({"points": [[10, 10]], "mask_input": np.zeros((2, 3, 256, 256))}, "one mask per"),
        ({}, "no prompt"),
        ({"labels": [1]}, "without points"),
        ({"points": np.zeros((2, 1, 2)), "box": np.array([[0, 0, 9, 9]] * 3)}, "batch size"),
    ],
)
def test_bad_prompts_raise_prompt_error(predictor, kwargs, message) -> None:
    with pytest.raises(PromptError, match=message):
        predictor.predict(**kwargs)


def test_prompt_error_is_a_value_error(predictor) -> None:
    with pytest.raises(ValueError):
        predictor.predict(box=[5, 5, 1, 1])


def test_points_on_the_border_pixels_are_accepted(predictor) -> None:
    masks, scores, _ = predictor.predict(points=[[-0.5, -0.5], [255.5, 255.5], [0, 255]])
    assert masks.shape == (3, 256, 256) and np.isfinite(scores).all()


def test_box_partly_outside_is_clipped(predictor) -> None:
    sticking_out = predictor.predict(box=[-50, -80, 180, 140])
    clipped = predictor.predict(box=[-0.5, -0.5, 180, 140])
    assert sticking_out[0].shape == (3, 256, 256)
    assert np.array_equal(sticking_out[0], clipped[0])
    np.testing.assert_allclose(sticking_out[1], clipped[1])


def test_outputs_do_not_depend_on_how_busy_the_machine_is(predictor) -> None:
    """Replay and "same input, every way in" need bit-identical outputs: the thread count (and
    so the order of float reductions) must not follow the machine's load."""
    quiet = predictor.predict(box=[10, 20, 180, 140])
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.5)  # the kernel's runnable count now includes the hogs
        busy = predictor.predict(box=[10, 20, 180, 140])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    for a, b in zip(quiet, busy, strict=True):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------- outputs


def test_single_click_outputs(predictor, sample) -> None:
    labels = sample[1]
    masks, scores, logits = predictor.predict(points=[NUCLEUS_A], labels=[1])
    assert masks.shape == (3, 256, 256) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert logits.shape == (3, 256, 256) and logits.dtype == np.float32
    best = masks[np.argmax(scores)]
    nucleus = labels == _label_at(labels, NUCLEUS_A)
    assert best[NUCLEUS_A[1], NUCLEUS_A[0]]
    assert (best & nucleus).sum() / (best | nucleus).sum() > 0.7


def test_single_mask_and_logits(predictor) -> None:
    masks, scores, logits = predictor.predict(points=[NUCLEUS_A], multimask=False)
    assert masks.shape == (1, 256, 256) and scores.shape == (1,) and logits.shape == (1, 256, 256)
    full, scores2, _ = predictor.predict(points=[NUCLEUS_A], multimask=False, return_logits=True)
    assert full.dtype == np.float32 and full.shape == (1, 256, 256)
    assert np.array_equal(full > 0, masks)
    np.testing.assert_array_equal(scores, scores2)


def test_labels_default_to_positive(predictor) -> None:
    a = predictor.predict(points=[NUCLEUS_A])
    b = predictor.predict(points=[NUCLEUS_A], labels=[1])
    c = predictor.predict(points=NUCLEUS_A, labels=[True])
    for other in (b, c):
        assert np.array_equal(a[0], other[0])
        np.testing.assert_array_equal(a[1], other[1])


def test_batched_boxes(predictor, sample) -> None:
    labels = sample[1]
    boxes = []
    for i in (1, 3, 8, 12):
        ys, xs = np.nonzero(labels == i)
        boxes.append([xs.min() - 2, ys.min() - 2, xs.max() + 2, ys.max() + 2])
    boxes = np.array(boxes, dtype=float)
    masks, scores, logits = predictor.predict(box=boxes)
    assert masks.shape == (4, 3, 256, 256)
    assert scores.shape == (4, 3) and logits.shape == (4, 3, 256, 256)
    for b, box in enumerate(boxes):
        one = predictor.predict(box=box)
        assert np.array_equal(masks[b], one[0]), b
        np.testing.assert_allclose(scores[b], one[1], atol=1e-5)
        np.testing.assert_allclose(logits[b], one[2], atol=1e-4, rtol=1e-5)
    single = predictor.predict(box=boxes, multimask=False)[0]
    assert single.shape == (4, 1, 256, 256)


def test_batched_points_equal_per_prompt(predictor) -> None:
    points = np.array([[NUCLEUS_A], [NUCLEUS_B], [[30, 250]]], dtype=float)  # (3, 1, 2)
    masks, scores, _ = predictor.predict(points=points, labels=np.ones((3, 1)))
    assert masks.shape == (3, 3, 256, 256) and scores.shape == (3, 3)
    for b in range(3):
        one_masks, one_scores, _ = predictor.predict(points=points[b], labels=[1])
        assert np.array_equal(masks[b], one_masks), b
        np.testing.assert_allclose(scores[b], one_scores, atol=1e-5)
    # points (B, N, 2) together with one box: the box is shared by every object
    with_box = predictor.predict(points=points[:2], box=[100, 100, 170, 140])
    assert with_box[0].shape == (2, 3, 256, 256)


def test_mask_input_feedback(predictor, sample) -> None:
    labels = sample[1]
    masks, scores, logits = predictor.predict(points=[NUCLEUS_A], labels=[1])
    best = int(np.argmax(scores))
    refined, refined_scores, refined_logits = predictor.predict(
        points=[NUCLEUS_A], labels=[1], mask_input=logits[best][None], multimask=False
    )
    assert refined.shape == (1, 256, 256) and refined_scores.shape == (1,)
    nucleus = labels == _label_at(labels, NUCLEUS_A)
    assert (refined[0] & nucleus).sum() / (refined[0] | nucleus).sum() > 0.7
    assert (refined[0] & masks[best]).sum() / (refined[0] | masks[best]).sum() > 0.8
    # the mask input changes the answer (it is used), a tensor works as well as an array
    without = predictor.predict(points=[NUCLEUS_A], labels=[1], multimask=False)[2]
    assert not np.array_equal(refined_logits, without)
    as_tensor = predictor.predict(
        points=[NUCLEUS_A], mask_input=torch.from_numpy(logits[best]), multimask=False
    )
    assert np.array_equal(as_tensor[0], refined)


def test_negative_click_removes_a_region(predictor, sample) -> None:
    labels = sample[1]
    a, b = _label_at(labels, NUCLEUS_A), _label_at(labels, NUCLEUS_B)
    assert a and b and a != b
    both = predictor.predict(points=[NUCLEUS_A, NUCLEUS_B], labels=[1, 1], multimask=False)[0][0]
    assert both[NUCLEUS_B[1], NUCLEUS_B[0]] and both[NUCLEUS_A[1], NUCLEUS_A[0]]
    only_a = predictor.predict(points=[NUCLEUS_A, NUCLEUS_B], labels=[1, 0], multimask=False)[0][0]
    assert only_a[NUCLEUS_A[1], NUCLEUS_A[0]]
    assert not only_a[NUCLEUS_B[1], NUCLEUS_B[0]]
    assert (only_a & (labels == b)).sum() < 0.1 * (both & (labels == b)).sum()
    assert only_a.sum() < both.sum()

    # a box around both nuclei, then a negative click on one of them
    ys, xs = np.nonzero((labels == a) | (labels == b))
    box = [xs.min() - 2, ys.min() - 2, xs.max() + 2, ys.max() + 2]
    boxed = predictor.predict(box=box, multimask=False)[0][0]
    cut = predictor.predict(points=[NUCLEUS_B], labels=[0], box=box, multimask=False)[0][0]
    assert (boxed & (labels == b)).sum() > 0.8 * (labels == b).sum()
    assert (cut & (labels == b)).sum() < 0.1 * (labels == b).sum()
    assert (cut & (labels == a)).sum() > 0.8 * (labels == a).sum()


# --------------------------------------------------------------------------- embeddings


def test_set_embedding_reproduces_set_image(vit_t_model, predictor, sample) -> None:
    expected = predictor.predict(points=[NUCLEUS_A, NUCLEUS_B], labels=[1, 0])
    before = predictor.embedding
    embedding = predictor.compute_embedding(sample[0])
    assert predictor.embedding is before  # compute_embedding leaves the current image alone
    assert isinstance(embedding, ImageEmbedding)
    assert embedding.original_hw == (256, 256) and embedding.model_name == "vit_t"
    assert torch.equal(embedding.features, predictor.embedding.features)
    other = Predictor(vit_t_model, device="cpu")
    other.set_embedding(embedding)
    got = other.predict(points=[NUCLEUS_A, NUCLEUS_B], labels=[1, 0])
    for ours, theirs in zip(got, expected, strict=True):
        assert np.array_equal(ours, theirs)


def test_set_embedding_from_another_model_is_refused(predictor) -> None:
    foreign = ImageEmbedding(
        predictor.embedding.features.clone(), predictor.embedding.geometry, "vit_b"
    )
    with pytest.raises(ValueError, match=re.escape("'vit_b'")) as info:
        predictor.set_embedding(foreign)
    assert "vit_t" in str(info.value)
    assert predictor.embedding.model_name == "vit_t"


def test_embedding_shape_is_checked(predictor) -> None:
    with pytest.raises(ValueError, match=r"\(1, 256, 64, 64\)"):
        ImageEmbedding(torch.zeros(1, 256, 32, 32), predictor.embedding.geometry, "vit_t")
