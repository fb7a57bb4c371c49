"""SAM ViT-B/L/H against the official code, with deterministic random weights.

`shared/reference/random_vit_<arch>.npz` holds what the official segment-anything 1.0 code
computed (CPU, fp32) with the weights of `shared/reference/random_weights.make_state_dict`.
Our model loads the same weights (same keys and shapes, strict) and must reproduce the image
embedding, the low-resolution logits and predicted IoUs to float32 round-off. Our mask
upsampling is bit-exact: the official low-res logits, upsampled by us, give exactly the official
masks. The masks from our own logits may then differ only at pixels whose official full-size
logit is within the (~1e-7) logit round-off of the 0 threshold: random weights give tiny logits
(|logit| ~0.03) and ~1e2 pixels per prompt within 1e-6 of 0, so 0-2 such pixels flip per prompt.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
import torch

from sam_core import ImageGeometry, Predictor, build_sam
from sam_core.mask_upsampling import upsample_logits

ARCHS = ("vit_b", "vit_l", "vit_h")

PROMPTS = ("point", "box")
MODES = {"multi": True, "single": False}

# Measured diffs (CPU, fp32) are ~1e-5 on embeddings with values up to ~4 and ~1e-7 on
# logits; these bounds keep a wide margin and still catch any real deviation.
EMBEDDING_ATOL, EMBEDDING_RTOL = 1e-3, 1e-4
LOGITS_ATOL = 1e-5
IOU_ATOL = 1e-5
MAX_FLIPPED_PIXELS = 10  # per prompt, and each only where the official logit is ~0


def _load_reference(shared_dir, arch: str) -> dict:
    path = shared_dir / "reference" / f"random_{arch}.npz"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _reference_masks(reference: dict, key: str) -> np.ndarray:
    width = reference["image"].shape[1]
    return np.unpackbits(reference[f"{key}_masks"], axis=-1)[..., :width].astype(bool)


def _official_full_logits(reference: dict, key: str) -> np.ndarray:
    geometry = ImageGeometry.for_shape(reference["image"].shape[:2])
    low_res = torch.from_numpy(reference[f"{key}_lowres_logits"])
    return upsample_logits(low_res, geometry).numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_upsampling_official_logits_gives_official_masks_exactly(shared_dir, arch) -> None:
    reference = _load_reference(shared_dir, arch)
    for prompt in PROMPTS:
        for mode in MODES:
            key = f"{prompt}_{mode}"
            expected = _reference_masks(reference, key)
            ours = _official_full_logits(reference, key) > 0
            assert ours.shape == expected.shape
            assert np.array_equal(ours, expected), f"{key}: {(ours != expected).sum()} pixels"


def _run(arch: str, reference: dict, random_weights) -> dict:
    model = build_sam(arch)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state_dict = random_weights.make_state_dict(shapes)
    model.load_state_dict(state_dict, strict=True)
    del state_dict
    predictor = Predictor(model, device="cpu", precision="fp32")
    start = time.perf_counter()
    embedding = predictor.set_image(reference["image"])
    seconds = time.perf_counter() - start
    out = {"embedding": embedding.features.cpu().numpy(), "seconds": seconds}
    for prompt in PROMPTS:
        kwargs = (
            {"points": reference["point_xy"], "labels": [1]}
            if prompt == "point"
            else {"box": reference["box_xyxy"]}
        )
        for mode, multimask in MODES.items():
            masks, iou, logits = predictor.predict(**kwargs, multimask=multimask)
            out[f"{prompt}_{mode}"] = (masks, iou, logits)
    del predictor, model, embedding
    gc.collect()
    return out


@pytest.fixture(scope="module", params=ARCHS)
def fidelity(request, shared_dir, random_weights):
    arch = request.param
    reference = _load_reference(shared_dir, arch)
    with torch.inference_mode():
        ours = _run(arch, reference, random_weights)
    yield arch, reference, ours
    del reference, ours
    gc.collect()


@pytest.mark.slow
def test_embedding_matches_official(fidelity) -> None:
    arch, ref, ours = fidelity
    emb, expected = ours["embedding"], ref["embedding"]
    assert emb.shape == expected.shape == (1, 256, 64, 64)
    diff = float(np.abs(emb - expected).max())
    print(
        f"\n{arch}: set_image {ours['seconds']:.1f} s, embedding max|diff| {diff:.2e} "
        f"(max|ref| {np.abs(expected).max():.2f})"
    )
    np.testing.assert_allclose(emb, expected, atol=EMBEDDING_ATOL, rtol=EMBEDDING_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("prompt", PROMPTS)
def test_decoder_outputs_match_official(fidelity, prompt: str, mode: str) -> None:
    arch, ref, ours = fidelity
    masks, iou, logits = ours[f"{prompt}_{mode}"]
    n = 3 if mode == "multi" else 1
    key = f"{prompt}_{mode}"
    ref_logits, ref_iou = ref[f"{key}_lowres_logits"], ref[f"{key}_iou"]
    height, width = ref["image"].shape[:2]
    ref_masks = _reference_masks(ref, key)

    assert logits.shape == ref_logits.shape == (n, 256, 256)
    assert iou.shape == ref_iou.shape == (n,)
    assert masks.shape == ref_masks.shape == (n, height, width)
    assert masks.dtype == bool

    logit_diff = float(np.abs(logits - ref_logits).max())
    iou_diff = float(np.abs(iou - ref_iou).max())
    flipped = masks != ref_masks
    official_full = _official_full_logits(ref, key)
    worst = float(np.abs(official_full[flipped]).max()) if flipped.any() else 0.0
    print(
        f"\n{arch} {key}: logits max|diff| {logit_diff:.2e} (max|ref| "
        f"{np.abs(ref_logits).max():.3f}), iou max|diff| {iou_diff:.2e}, "
        f"mask pixels differing {int(flipped.sum())} (max |official logit| there {worst:.1e})"
    )
    np.testing.assert_allclose(logits, ref_logits, atol=LOGITS_ATOL, rtol=0)
    np.testing.assert_allclose(iou, ref_iou, atol=IOU_ATOL, rtol=0)
    assert ref_masks.any(axis=(1, 2)).all(), "reference masks should not be empty"
    # Bilinear upsampling is a convex combination: full-size logits differ by at most the
    # low-res difference, so only pixels with |official logit| <= that can flip.
    assert int(flipped.sum()) <= MAX_FLIPPED_PIXELS
    assert worst <= logit_diff + 1e-9, "a mask pixel differs where the logit is not ~0"
