"""`samscope export-onnx`: the exported decoder, run by onnxruntime, answers like our predictor.

The reference prompts (`shared/reference/mobilesam_prompts.npz`) carry the official image
embeddings of two images (a 256² nuclei image and a 1040×1388 one), so no encoder pass is
needed: both our PyTorch predictor and the ONNX graph decode from those embeddings.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sam_core import Predictor
from sam_core.cli import main
from sam_core.embedding import ImageEmbedding
from sam_core.image_input import ImageGeometry
from sam_core.onnx_export import OnnxUnavailableError, export_decoder_onnx

ort = pytest.importorskip("onnxruntime")

MIN_MEAN_IOU, MAX_SCORE_DIFF = 0.995, 0.01
PROMPTS_PER_IMAGE = 3


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def images(shared_dir, vit_t_model):
    """[(predictor on the official embedding, embedding (1,256,64,64) float32, geometry,
    [(x, y) clicks in original pixels])] for the two images with stored embeddings."""
    from PIL import Image

    path = shared_dir / "reference" / "mobilesam_prompts.npz"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    with np.load(path) as npz:
        keys = npz["keys"].tolist()
        stored = list(zip(npz["embedding_images"].tolist(), npz["embeddings"], strict=True))
    result = []
    for name, features in stored:
        set_name, stem = name.split("/")
        files = sorted((shared_dir / "data" / set_name / "images").glob(f"{stem}.*"))
        if len(files) != 1:
            pytest.skip(f"image {name} not found under {shared_dir / 'data'}")
        with Image.open(files[0]) as image:
            geometry = ImageGeometry.for_shape((image.height, image.width))
        clicks = [
            tuple(float(v) for v in key.split("@")[1].split(","))
            for key in keys
            if key.startswith(name + "#")
        ][:PROMPTS_PER_IMAGE]
        predictor = Predictor(vit_t_model, device="cpu")
        features = torch.from_numpy(features.astype(np.float32))
        predictor.set_embedding(ImageEmbedding(features, geometry, predictor.model_name))
        result.append((predictor, features.numpy(), geometry, clicks))
    return result


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, vit_t_model):
    """The 4-mask export (library call) and the single-mask export (through the CLI)."""
    folder = tmp_path_factory.mktemp("onnx")
    multi = export_decoder_onnx(vit_t_model, folder / "decoder.onnx")
    single = folder / "decoder_single.onnx"
    code = main(["export-onnx", "--model", "vit_t", "--out", str(single), "--return-single-mask"])
    return {"multi": multi, "single": single, "cli_code": code}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(features, geometry, points_xy, labels, mask_input=None) -> dict[str, np.ndarray]:
    """Inputs in the official convention: input-frame coordinates, padding point when no box."""
    coords = geometry.to_input_frame(np.asarray(points_xy, dtype=np.float64).reshape(-1, 2))
    labels = np.asarray(labels, dtype=np.float32)
    if not np.isin(labels, (2, 3)).any():
        coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
        labels = np.concatenate([labels, [-1.0]]).astype(np.float32)
    has_mask = mask_input is not None
    return {
        "image_embeddings": features,
        "point_coords": coords[None].astype(np.float32),
        "point_labels": labels[None],
        "mask_input": (mask_input if has_mask else np.zeros((256, 256)))
        .reshape(1, 1, 256, 256)
        .astype(np.float32),
        "has_mask_input": np.array([float(has_mask)], np.float32),
        "orig_im_size": np.array(geometry.original_hw, np.float32),
    }


def test_cli_wrote_the_single_mask_file(onnx_files, capsys) -> None:
    assert onnx_files["cli_code"] == 0
    assert onnx_files["single"].stat().st_size > 1_000_000  # ~16 MB of float32 weights


def test_interface_matches_the_official_export(onnx_files) -> None:
    session = _session(onnx_files["multi"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    ]
    assert inputs["image_embeddings"] == [1, 256, 64, 64]
    assert inputs["point_coords"][2] == 2 and isinstance(inputs["point_coords"][1], str)
    assert inputs["mask_input"] == [1, 1, 256, 256]
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]


def test_one_click_masks_match_predictor(onnx_files, images) -> None:
    """3 clicks on each image: the 3 multimask outputs (indices 1..3) and their IoU scores."""
    session = _session(onnx_files["multi"])
    ious, score_diffs = [], []
    for predictor, features, geometry, clicks in images:
        for xy in clicks:
            masks, scores, _ = predictor.predict(points=[xy], labels=[1])
            out_masks, out_iou, out_low = session.run(None, _feeds(features, geometry, [xy], [1]))
            assert out_masks.shape == (1, 4, *geometry.original_hw)
            assert out_low.shape == (1, 4, 256, 256)
            ious += [_iou(out_masks[0, 1 + k] > 0, masks[k]) for k in range(3)]
            score_diffs.append(np.abs(out_iou[0, 1:] - scores).max())
    print(f"\nONNX vs PyTorch: mIoU {np.mean(ious):.6f}, max|score diff| {max(score_diffs):.1e}")
    assert np.mean(ious) >= MIN_MEAN_IOU
    assert max(score_diffs) <= MAX_SCORE_DIFF


def test_box_points_and_mask_input_match_predictor(onnx_files, images) -> None:
    """A box (corner labels 2/3, no padding), 3 points (single-mask output), and a refinement
    with the previous low-res logits as mask input."""
    session = _session(onnx_files["multi"])
    predictor, features, geometry, clicks = images[1]  # the 1040×1388 image
    (x0, y0), (x1, y1) = clicks[0], clicks[1]
    box = [min(x0, x1), min(y0, y1), max(x0, x1) + 40, max(y0, y1) + 40]
    masks, scores, _ = predictor.predict(box=box)
    out_masks, out_iou, _ = session.run(
        None, _feeds(features, geometry, np.reshape(box, (2, 2)), [2, 3])
    )
    assert min(_iou(out_masks[0, 1 + k] > 0, masks[k]) for k in range(3)) >= 0.99
    assert np.abs(out_iou[0, 1:] - scores).max() <= MAX_SCORE_DIFF

    points, labels = clicks[:3], [1, 0, 1]
    masks, scores, low_res = predictor.predict(points=points, labels=labels, multimask=False)
    out_masks, out_iou, _ = session.run(None, _feeds(features, geometry, points, labels))
    assert _iou(out_masks[0, 0] > 0, masks[0]) >= 0.99
    assert abs(out_iou[0, 0] - scores[0]) <= MAX_SCORE_DIFF

    refined, refined_scores, _ = predictor.predict(
        points=points, labels=labels, mask_input=low_res, multimask=False
    )
    out_masks, out_iou, _ = session.run(
        None, _feeds(features, geometry, points, labels, mask_input=low_res)
    )
    assert _iou(out_masks[0, 0] > 0, refined[0]) >= 0.99
    assert abs(out_iou[0, 0] - refined_scores[0]) <= MAX_SCORE_DIFF


def test_single_mask_export_picks_like_the_official_export(onnx_files, images) -> None:
    """One click: the multimask output with the best predicted IoU; three points: output 0."""
    session = _session(onnx_files["single"])
    predictor, features, geometry, clicks = images[0]
    masks, scores, _ = predictor.predict(points=[clicks[0]], labels=[1])
    out_masks, out_iou, out_low = session.run(None, _feeds(features, geometry, [clicks[0]], [1]))
    assert out_masks.shape == (1, 1, *geometry.original_hw) and out_low.shape == (1, 1, 256, 256)
    best = int(np.argmax(scores))
    assert abs(out_iou[0, 0] - scores[best]) <= MAX_SCORE_DIFF
    assert _iou(out_masks[0, 0] > 0, masks[best]) >= 0.99

    points, labels = clicks[:3], [1, 1, 0]
    masks, scores, _ = predictor.predict(points=points, labels=labels, multimask=False)
    out_masks, out_iou, _ = session.run(None, _feeds(features, geometry, points, labels))
    assert abs(out_iou[0, 0] - scores[0]) <= MAX_SCORE_DIFF
    assert _iou(out_masks[0, 0] > 0, masks[0]) >= 0.99


@pytest.mark.slow
def test_quantized_export_stays_close(tmp_path, onnx_files, vit_t_model, images) -> None:
    """Dynamic int8 weights: a smaller file whose one-click masks stay close to fp32's
    (measured: mIoU 0.92 over these clicks)."""
    path = export_decoder_onnx(vit_t_model, tmp_path / "q.onnx", quantize=True)
    session = _session(path)
    ious = []
    for predictor, features, geometry, clicks in images:
        for xy in clicks[:2]:
            masks, _, _ = predictor.predict(points=[xy], labels=[1])
            out_masks, _, _ = session.run(None, _feeds(features, geometry, [xy], [1]))
            ious += [_iou(out_masks[0, 1 + k] > 0, masks[k]) for k in range(3)]
    print(f"\nint8 ONNX vs PyTorch fp32: mIoU {np.mean(ious):.4f}")
    assert path.stat().st_size < 0.7 * onnx_files["multi"].stat().st_size
    assert np.mean(ious) >= 0.85


def test_clear_error_without_onnx(monkeypatch, tmp_path, vit_t_model, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(OnnxUnavailableError, match=r"samscope\[onnx\]"):
        export_decoder_onnx(vit_t_model, tmp_path / "x.onnx")
    assert main(["export-onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "onnx" in err and "pip install" in err
    assert not (tmp_path / "x.onnx").exists()
