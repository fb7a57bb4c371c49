"""Fast unit tests of the model's parts, without trained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import sam_core.modeling.vit_encoder as vit_encoder
from sam_core import ImageGeometry, build_sam
from sam_core.mask_upsampling import upsample_logits, upsample_masks
from sam_core.modeling.vit_encoder import ViTAttention, window_partition, window_unpartition

# --------------------------------------------------------------------------- state dicts


def test_vit_t_keys_and_shapes_equal_the_real_mobilesam_checkpoint(mobilesam_checkpoint) -> None:
    official = torch.load(mobilesam_checkpoint, map_location="cpu", weights_only=True)
    ours = build_sam("vit_t").state_dict()
    assert set(ours) == set(official), (
        sorted(set(official) - set(ours))[:5],
        sorted(set(ours) - set(official))[:5],
    )
    wrong = [k for k in ours if ours[k].shape != official[k].shape]
    assert not wrong, wrong[:5]
    model = build_sam("vit_t")
    model.load_state_dict(official, strict=True)


# Official numbers: sum(p.numel() for p in sam.parameters()) of segment-anything's models.
PARAMETERS = {"vit_b": 93_735_472, "vit_l": 312_342_128, "vit_h": 641_090_608}


def _meta_model(arch: str):
    with torch.device("meta"):  # shapes only: no memory, no random init
        return build_sam(arch)


@pytest.mark.parametrize("arch", list(PARAMETERS))
def test_parameter_counts(arch: str) -> None:
    model = _meta_model(arch)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - PARAMETERS[arch]) <= 100_000, count


@pytest.mark.parametrize(
    ("arch", "width", "depth", "global_blocks"),
    [
        ("vit_b", 768, 12, (2, 5, 8, 11)),
        ("vit_l", 1024, 24, (5, 11, 17, 23)),
        ("vit_h", 1280, 32, (7, 15, 23, 31)),
    ],
)
def test_vit_state_dict_layout(arch, width, depth, global_blocks) -> None:
    """Keys and shapes follow the official checkpoints (which these names are copied from)."""
    sd = _meta_model(arch).state_dict()
    head_dim = 64 if arch != "vit_h" else 80  # width / heads: 768/12, 1024/16, 1280/16
    assert sd["image_encoder.patch_embed.proj.weight"].shape == (width, 3, 16, 16)
    assert sd["image_encoder.pos_embed"].shape == (1, 64, 64, width)
    for i in range(depth):
        side = 64 if i in global_blocks else 14
        assert sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape == (2 * side - 1, head_dim)
        assert sd[f"image_encoder.blocks.{i}.attn.rel_pos_w"].shape == (2 * side - 1, head_dim)
        assert sd[f"image_encoder.blocks.{i}.attn.qkv.weight"].shape == (3 * width, width)
        assert sd[f"image_encoder.blocks.{i}.mlp.lin1.weight"].shape == (4 * width, width)
    assert f"image_encoder.blocks.{depth}.norm1.weight" not in sd
    assert sd["image_encoder.neck.0.weight"].shape == (256, width, 1, 1)
    assert sd["image_encoder.neck.2.weight"].shape == (256, 256, 3, 3)
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in sd
    assert sd["mask_decoder.iou_token.weight"].shape == (1, 256)
    assert sd["mask_decoder.mask_tokens.weight"].shape == (4, 256)
    assert "pixel_mean" not in sd and "pixel_std" not in sd  # non-persistent, as official


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="vit_x"):
        build_sam("vit_x")


# --------------------------------------------------------------------------- attention


def _naive_attention(attn: ViTAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax((q·scale) kᵀ + B) v with the decomposed relative-position bias of the paper
    (MViTv2): B[(y, x), (ky, kx)] = q[y, x]·R_h[y - ky + S - 1] + q[y, x]·R_w[x - kx + S - 1],
    q unscaled; written out with explicit offset tables, in float64."""
    b, h, w, c = x.shape
    heads = attn.num_heads
    d = c // heads
    x = x.double()
    qkv = F.linear(x, attn.qkv.weight.double(), attn.qkv.bias.double())
    qkv = qkv.reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, d)
    logits = (q * d**-0.5) @ k.transpose(-2, -1)  # (B, heads, N, N)

    rel_h, rel_w = attn.rel_pos_h.double(), attn.rel_pos_w.double()
    ys, xs = np.divmod(np.arange(h * w), w)  # row-major token order
    dy = torch.from_numpy(ys[:, None] - ys[None, :] + h - 1)  # (N, N) indices into R_h
    dx = torch.from_numpy(xs[:, None] - xs[None, :] + w - 1)
    r_h, r_w = rel_h[dy], rel_w[dx]  # (N, N, d)
    bias = torch.einsum("bnqd,qkd->bnqk", q, r_h) + torch.einsum("bnqd,qkd->bnqk", q, r_w)
    out = torch.softmax(logits + bias, dim=-1) @ v
    out = out.transpose(1, 2).reshape(b, h, w, c)
    return F.linear(out, attn.proj.weight.double(), attn.proj.bias.double()).float()


@pytest.fixture(scope="module")
def attention() -> tuple[ViTAttention, torch.Tensor]:
    torch.manual_seed(0)
    attn = ViTAttention(dim=64, num_heads=4, grid_size=16).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.15)
    x = torch.randn(2, 16, 16, 64)
    return attn, x


def _assert_close_to(ours: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """float32 round-off relative to the output's scale."""
    diff = (ours - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert diff <= 1e-5 * scale, f"{what}: max|diff| {diff:.2e} at scale {scale:.2f}"


def test_relative_position_bias_matters(attention) -> None:
    """The reference test below is only meaningful if the bias changes the output a lot."""
    attn, x = attention
    with torch.no_grad():
        expected = _naive_attention(attn, x)
        saved = attn.rel_pos_h.clone()
        attn.rel_pos_h.copy_(saved.flip(0))  # offsets y - ky read as ky - y
        try:
            flipped = attn(x)
        finally:
            attn.rel_pos_h.copy_(saved)
    assert (flipped - expected).abs().max() > 1e-2 * expected.abs().max()


# bytes per query row of the bias here: 2 batch x 4 heads x 16 x 256 keys x 4 bytes = 131072
@pytest.mark.parametrize(
    ("max_bytes", "label"),
    [(1, "one row per chunk"), (3 * 131072, "3 rows, uneven last chunk"), (2**40, "unchunked")],
)
def test_global_attention_matches_naive_reference(
    attention, monkeypatch, max_bytes: int, label: str
) -> None:
    attn, x = attention
    monkeypatch.setattr(vit_encoder, "_MAX_BIAS_BYTES", max_bytes)
    with torch.no_grad():
        ours = attn(x)
        expected = _naive_attention(attn, x)
    assert ours.shape == x.shape
    _assert_close_to(ours, expected, label)


def test_chunked_and_unchunked_attention_agree(attention, monkeypatch) -> None:
    attn, x = attention
    with torch.no_grad():
        monkeypatch.setattr(vit_encoder, "_MAX_BIAS_BYTES", 2**40)
        whole = attn(x)
        monkeypatch.setattr(vit_encoder, "_MAX_BIAS_BYTES", 5 * 131072)
        chunked = attn(x)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)


def test_window_attention_with_padding_matches_reference() -> None:
    """A windowed block sees padded 14x14 windows; attention per window is the same formula."""
    torch.manual_seed(1)
    attn = ViTAttention(dim=32, num_heads=2, grid_size=14).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.15)
        x = torch.randn(1, 20, 17, 32)
        windows, padded = window_partition(x, 14)
        _assert_close_to(attn(windows), _naive_attention(attn, windows), "windows")
        assert padded == (28, 28)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(("h", "w", "window"), [(20, 23, 7), (14, 14, 14), (64, 64, 14), (5, 3, 4)])
def test_window_partition_round_trip(h: int, w: int, window: int) -> None:
    x = torch.randn(2, h, w, 8)
    windows, (hp, wp) = window_partition(x, window)
    assert hp % window == 0 and wp % window == 0
    assert hp - h < window and wp - w < window
    n_h, n_w = hp // window, wp // window
    assert windows.shape == (2 * n_h * n_w, window, window, 8)
    padded = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    for i in range(windows.shape[0]):  # batch-major, then rows of windows, then columns
        bi, rest = divmod(i, n_h * n_w)
        r, c = divmod(rest, n_w)
        expected = padded[bi, r * window : (r + 1) * window, c * window : (c + 1) * window]
        assert torch.equal(windows[i], expected)
    back = window_unpartition(windows, window, (hp, wp), (h, w))
    assert back.shape == x.shape
    assert torch.equal(back, x)


# --------------------------------------------------------------------------- upsampling


def _official_postprocess(low_res: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """segment-anything's `Sam.postprocess_masks`."""
    masks = F.interpolate(low_res, (1024, 1024), mode="bilinear", align_corners=False)
    h, w = geometry.input_hw
    masks = masks[..., :h, :w]
    return F.interpolate(masks, geometry.original_hw, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "hw", [(640, 480), (480, 640), (1040, 1388), (256, 320), (1, 1000), (1000, 3), (1024, 1024)]
)
def test_upsampling_is_bit_exact_with_official(hw) -> None:
    torch.manual_seed(sum(hw))
    low_res = torch.randn(2, 3, 256, 256) * 5
    geometry = ImageGeometry.for_shape(hw)
    expected = _official_postprocess(low_res, geometry)
    ours = upsample_logits(low_res, geometry)
    assert ours.shape == (2, 3, *hw)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, expected)
    assert torch.equal(upsample_masks(low_res, geometry), expected > 0)


def test_upsampling_keeps_leading_axes() -> None:
    geometry = ImageGeometry.for_shape((100, 60))
    low_res = torch.randn(4, 256, 256)
    ours = upsample_logits(low_res, geometry)
    assert ours.shape == (4, 100, 60)
    assert torch.equal(ours, _official_postprocess(low_res[None], geometry)[0])
    assert upsample_logits(torch.randn(5, 2, 1, 256, 256), geometry).shape == (5, 2, 1, 100, 60)
