"""Small building blocks shared by the encoders and the mask decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# oneDNN's fused "op + pointwise" kernels (what torch.compile's CPU backend calls, but
# available in eager mode without a compiler): a GELU applied inside the GEMM / convolution
# saves a full read and write of the activations. Same arithmetic (exact erf GELU).
_MKLDNN = getattr(torch.ops, "mkldnn", None)


def _fused_kernels_work() -> bool:
    """The fused kernels are private torch ops: use them only if they exist in this torch and
    give the plain ops' results on a tiny input (a torch version that changed their signature
    or meaning then falls back to the plain ops instead of failing)."""
    if not (
        torch.backends.mkldnn.is_available()
        and hasattr(_MKLDNN, "_linear_pointwise")
        and hasattr(_MKLDNN, "_convolution_pointwise")
    ):
        return False
    try:
        with torch.inference_mode():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(2, 4, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
            w = torch.randn(4, 4, 3, 3, generator=g)
            b = torch.randn(4, generator=g)
            plain = F.conv2d(x, w, b, 1, 1)
            conv = _MKLDNN._convolution_pointwise(
                x, w, b, [1, 1], [1, 1], [1, 1], 1, "gelu", [], "none"
            )
            added = _MKLDNN._convolution_pointwise.binary(
                x, plain, w, b, [1, 1], [1, 1], [1, 1], 1, "add", None, None, [], None
            )
            rows = x.flatten(1)[:, :16]
            lw, lb = torch.randn(3, 16, generator=g), torch.randn(3, generator=g)
            linear = _MKLDNN._linear_pointwise(rows, lw, lb, "gelu", [], "none")
        return (
            torch.allclose(conv, F.gelu(plain), atol=1e-4)
            and torch.allclose(added, plain + plain, atol=1e-4)
            and torch.allclose(linear, F.gelu(F.linear(rows, lw, lb)), atol=1e-4)
        )
    except (RuntimeError, TypeError, ValueError):
        return False


_HAS_FUSED = _fused_kernels_work()


def _can_fuse(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Fused kernels for fp32 CPU inference only: no autograd, no autocast, same dtype."""
    return (
        _HAS_FUSED
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def fused_linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """linear(x) for (..., in) → (..., out). In fp32 CPU inference one oneDNN kernel that adds
    the bias inside the GEMM (`F.linear` first copies the bias into every output row)."""
    if _can_fuse(x, linear.weight):
        return _MKLDNN._linear_pointwise(x, linear.weight, linear.bias, "none", [], "")
    return linear(x)


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """GELU(linear(x)) for (..., in) → (..., out); one fused kernel in fp32 CPU inference."""
    if _can_fuse(x, linear.weight):
        return _MKLDNN._linear_pointwise(x, linear.weight, linear.bias, "gelu", [], "none")
    return F.gelu(linear(x))


def fused_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    groups: int = 1,
    gelu: bool = False,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """conv2d(x) [+ add] [then GELU], (B, C, H, W) → (B, C', H', W'), dilation 1.

    In fp32 CPU inference one oneDNN kernel does the convolution, the bias and the GELU or
    the residual sum (`add`, same shape as the output), and keeps the memory format
    (channels-last in, channels-last out); torch's own 1x1 convolutions otherwise go through
    a slower generic path. Elsewhere (autograd, autocast, GPU) the plain ops.
    """
    fusable = _can_fuse(x, weight) and (
        add is None
        or (
            add.dtype == x.dtype
            and x.is_contiguous(memory_format=torch.channels_last)
            and add.is_contiguous(memory_format=torch.channels_last)
        )
    )
    if fusable:
        geometry = (list(padding), list(stride), [1, 1], groups)
        if add is None:
            unary = ("gelu", [], "none") if gelu else ("none", [], "")
            return _MKLDNN._convolution_pointwise(x, weight, bias, *geometry, *unary)
        out = _MKLDNN._convolution_pointwise.binary(
            x, add, weight, bias, *geometry, "add", None, None, [], None
        )
        return F.gelu(out) if gelu else out
    out = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if add is not None:
        out = out + add
    return F.gelu(out) if gelu else out


class FusedConv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and keys) that runs as `fused_conv2d` where it can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or self.dilation != (1, 1) or isinstance(self.padding, str):
            return super().forward(x)
        return fused_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a B x C x H x W tensor (per pixel)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        # A Python int, not x.shape[1]: ONNX tracing then sees a constant normalised shape.
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm normalises trailing dims, so move channels last and back.
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps
        )
        return x.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (none after the last).

    The decoder's hypernetworks and IoU head are instances of this.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [in_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class FeedForward(nn.Module):
    """Linear → GELU → Linear, the transformer MLP of the ViT blocks (`lin1`, `lin2`)."""

    def __init__(self, dim: int, hidden_dim: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def encoder_neck(in_channels: int, out_channels: int = 256) -> nn.Sequential:
    """The neck that maps encoder features to the 256-channel image embedding.

    1x1 conv → LayerNorm2d → 3x3 conv → LayerNorm2d, convs without bias (keys `neck.0..3`).
    """
    return nn.Sequential(
        FusedConv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        FusedConv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )
