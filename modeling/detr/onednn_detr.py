"""fp32 CPU matrix products through oneDNN, with a backward, for DETR's 1x1 convolutions and linear layers.

PyTorch's fp32 CPU GEMM is 10-25% slower than oneDNN's linear for DETR's shapes on the AVX-512 AMD CPU of
`benchmarks/`, and its convolution backward sends 1x1 convolutions to a generic path that zero-fills and accumulates
the input gradient (strided ones to a slow oneDNN kernel). Here both are matrix products: the forward and the input
gradient through oneDNN's linear, the weight gradient through `torch.mm`. Outputs and gradients equal the standard
ops to float rounding (`tests/test_speed.py`). GPUs, other dtypes, autocast, `torch.compile`, `torch.export` / ONNX
and tracing keep the standard ops.

This file travels to the Hub with the model: it imports only torch.
"""

import torch
import torch.nn.functional as F
from torch import nn

# A module switch so tests and benchmarks can compare both paths.
ONEDNN_CPU = True

try:
    _LINEAR = torch.ops.mkldnn._linear_pointwise
except (AttributeError, RuntimeError):  # a torch build without oneDNN
    _LINEAR = None


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `x` and `weight` take the oneDNN path: fp32 CPU tensors outside autocast, compilation, export and
    tracing."""
    return (
        ONEDNN_CPU
        and _LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
        and torch.backends.mkldnn.is_available()
    )


class _OnednnLinear(torch.autograd.Function):
    """`rows @ (weight * scale[:, None]).T + bias` for 2-D `rows` (`scale` optional: a frozen per-output factor,
    applied here so that only the parameter itself, not a scaled copy, is kept for the backward); with
    `nhwc=(N, H, W)` the result is returned as a channels-last `(N, C_out, H, W)` tensor (rows in `(N, H, W)`
    order), the layout of a 1x1 convolution's output. `weight` may be a 1x1 convolution's `(C_out, C_in, 1, 1)`
    parameter: its gradient then comes back with the parameter's own strides (channels-last ones too), as DDP's
    gradient buckets expect; for a 1x1 kernel both layouts address the same memory, so this costs nothing."""

    @staticmethod
    def forward(ctx, rows, weight, bias, nhwc, scale):
        ctx.save_for_backward(rows if weight.requires_grad else None, weight if rows.requires_grad else None, scale)
        ctx.weight_geometry = (weight.shape, weight.stride())
        weight = weight.reshape(weight.shape[0], -1)  # (C_out, C_in), a view
        y = _LINEAR(rows, weight if scale is None else weight * scale[:, None], bias, "none", [], "")
        if nhwc is None:
            return y
        batch, height, width = nhwc
        channels = y.shape[1]
        # The same memory with NCHW sizes and channels-last strides. Built with `set_`, not as a view of `y`:
        # autograd forbids in-place ops (timm's `ReLU(inplace=True)`, `x += shortcut`) on views created inside a
        # custom Function, and a view made outside it would make those ops copy the activation in the backward.
        return y.new_empty(0).set_(y.untyped_storage(), 0, (batch, channels, height, width),
                                   (height * width * channels, 1, width * channels, channels))

    @staticmethod
    def backward(ctx, grad):
        rows, weight, scale = ctx.saved_tensors
        if grad.dim() == 4:
            grad = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # no copy when channels-last
        grad_rows = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # oneDNN again, reading the transposed weight in place
            matrix = weight.reshape(weight.shape[0], -1)
            matrix = matrix if scale is None else matrix * scale[:, None]
            grad_rows = _LINEAR(grad, matrix.t(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ rows
            if scale is not None:
                grad_weight *= scale[:, None]
            grad_weight = grad_weight.as_strided(*ctx.weight_geometry)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_rows, grad_weight, grad_bias, None, None


# Products smaller than this many multiply-adds stay with `F.linear`: measured forward + backward on the CPU of
# `benchmarks/`, oneDNN's linear (with the custom Function around it) is 5-10% faster from about 1e8 multiply-adds
# (DETR-R50's feed-forward layers), even at 2.5e7 and up to twice slower below (the demo's small transformer).
ONEDNN_MIN_MULTIPLY_ADDS = 2**26


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN where [`use_onednn`] allows and the product is large enough."""
    # use_onednn first: under torch.export the size test would put a guard on the symbolic batch and image sizes.
    if not use_onednn(x, weight) or x.numel() * weight.shape[0] < ONEDNN_MIN_MULTIPLY_ADDS:
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    return _OnednnLinear.apply(rows, weight, bias, None, None).view(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`layer(x)`; a plain `nn.Linear` without hooks goes through [`onednn_linear`], anything else (adapters,
    quantized or hooked layers) is called as a module."""
    if type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks):
        return onednn_linear(x, layer.weight, layer.bias)
    return layer(x)


def pointwise_convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          stride: tuple[int, int], scale: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution (no padding) of a channels-last fp32 CPU `x` with `weight * scale[:, None, None, None]`
    (`scale`: optional, not trained) as `(N*H*W, C_in) @ weight.T` on the channels-last storage; a stride keeps
    every `stride`-th row and column first. Returns NCHW sizes with channels-last strides."""
    rows = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view of the channels-last storage
    if stride != (1, 1):
        rows = rows[:, :: stride[0], :: stride[1]]
    batch, height, width, channels = rows.shape
    return _OnednnLinear.apply(rows.reshape(-1, channels), weight, bias, (batch, height, width), scale)
