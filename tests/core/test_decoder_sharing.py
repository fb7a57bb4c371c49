"""The decoder shortcuts (shared image side, batch-1 image) equal plain decoding."""

from __future__ import annotations

import torch

from sam_core.modeling.sam import build_sam


def _random_decoder_inputs(model, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.05
    embedding = torch.randn(1, 256, 64, 64, generator=g)
    points = torch.rand(batch, 3, 2, generator=g) * 1000
    labels = torch.randint(0, 2, (batch, 3), generator=g)
    return embedding, points, labels


@torch.inference_mode()
def test_shared_image_side_equals_plain_decoding() -> None:
    model = build_sam("vit_t").eval()
    embedding, points, labels = _random_decoder_inputs(model, batch=5)
    pe = model.prompt_encoder.dense_positional_encoding()
    sparse, dense = model.prompt_encoder((points, labels), None, None)
    assert dense.shape[0] == 1  # no mask prompt: one dense embedding for the whole batch

    plain_logits, plain_iou = model.mask_decoder(
        embedding, pe, sparse, dense.expand(5, -1, -1, -1), multimask=True
    )
    shared = model.mask_decoder.share_image_side(embedding, pe, dense)
    shared_logits, shared_iou = model.mask_decoder(
        embedding, pe, sparse, dense, multimask=True, shared=shared
    )
    torch.testing.assert_close(shared_logits, plain_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_iou, plain_iou, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_batched_prompts_equal_one_at_a_time() -> None:
    model = build_sam("vit_t").eval()
    embedding, points, labels = _random_decoder_inputs(model, batch=4, seed=1)
    pe = model.prompt_encoder.dense_positional_encoding()
    sparse, dense = model.prompt_encoder((points, labels), None, None)
    batch_logits, _ = model.mask_decoder(embedding, pe, sparse, dense, multimask=False)
    for i in range(4):
        one_logits, _ = model.mask_decoder(embedding, pe, sparse[i : i + 1], dense, False)
        torch.testing.assert_close(one_logits[0], batch_logits[i], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_folded_cross_attention_equals_projected_attention() -> None:
    """Few queries over many keys and many queries over few keys both fold their projections;
    passing pre-projected inputs forces the plain per-head computation for comparison."""
    from sam_core.modeling.two_way_transformer import ProjectedAttention

    g = torch.Generator().manual_seed(2)
    attention = ProjectedAttention(dim=256, num_heads=8, downsample=2).eval()
    for p in attention.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.1
    tokens = torch.randn(3, 7, 256, generator=g)
    image = torch.randn(1, 4096, 256, generator=g)

    def plain(q, k, v):
        return attention(attention.project_q(q), attention.project_k(k), attention.project_v(v))

    torch.testing.assert_close(
        attention(tokens, image, image), plain(tokens, image, image), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        attention(image, tokens, tokens), plain(image, tokens, tokens), atol=1e-4, rtol=1e-4
    )
