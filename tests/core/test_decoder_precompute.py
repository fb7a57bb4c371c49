"""The mask decoder's per-image precomputed terms give the plain computation's results.

Functional checks only (no timing): randomly initialised decoder modules, small batches.
"""

from __future__ import annotations

import pytest
import torch

from sam_core.modeling.mask_decoder import MaskDecoder
from sam_core.modeling.prompt_encoder import PromptEncoder
from sam_core.modeling.two_way_transformer import Projected, ProjectedAttention


@pytest.fixture(scope="module")
def modules() -> tuple[PromptEncoder, MaskDecoder]:
    torch.manual_seed(0)
    encoder, decoder = PromptEncoder().eval(), MaskDecoder().eval()
    with torch.no_grad():  # non-trivial LayerNorm affine terms and biases
        for module in decoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
    return encoder, decoder


def _prompts(encoder: PromptEncoder, batch: int, box: bool):
    generator = torch.Generator().manual_seed(batch)
    points = torch.rand(batch, 2, 2, generator=generator) * 1023
    labels = torch.randint(0, 2, (batch, 2), generator=generator)
    boxes = None
    if box:
        corner = torch.rand(batch, 2, generator=generator) * 800
        boxes = torch.cat([corner, corner + 200], dim=1)
    return encoder((points, labels), boxes, None)


@pytest.mark.parametrize(("batch", "box"), [(1, False), (3, True), (5, False)])
def test_precomputed_image_side_equals_plain_decoder(modules, batch, box) -> None:
    encoder, decoder = modules
    torch.manual_seed(1)
    image = torch.randn(1, 256, 64, 64)
    image_pe = encoder.dense_positional_encoding()
    with torch.inference_mode():
        sparse, dense = _prompts(encoder, batch, box)
        plain_logits, plain_iou = decoder.predict_all(image, image_pe, sparse, dense)
        shared = decoder.share_image_side(image, image_pe, dense)
        logits, iou = decoder.predict_all(image, image_pe, sparse, dense, shared)
    assert logits.shape == (batch, 4, 256, 256) and iou.shape == (batch, 4)
    scale = plain_logits.abs().max()
    assert (logits - plain_logits).abs().max() <= 1e-5 * scale
    assert torch.allclose(iou, plain_iou, atol=1e-5, rtol=1e-5)


def test_projected_query_attention_equals_unprojected(modules) -> None:
    torch.manual_seed(2)
    attention = ProjectedAttention(256, 8, downsample=2).eval()
    image = torch.randn(1, 300, 256)
    tokens = torch.randn(4, 7, 256)
    residual = torch.randn(1, 300, 256)
    with torch.inference_mode():
        expected = attention(image, tokens + 1.0, tokens, residual)
        ours = attention(attention.project_q(image), tokens + 1.0, tokens, residual)
        no_residual = attention(Projected(attention.project_q(image).heads), tokens, tokens)
        expected_no_residual = attention(image, tokens, tokens)
    assert ours.shape == (4, 300, 256)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(no_residual, expected_no_residual, atol=1e-5, rtol=1e-5)
