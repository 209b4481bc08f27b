"""The public 2-D convolution, forward and backward (cross-correlation, as in PyTorch).

Each op validates its whole call, then calls the backend its arrays select
(kernels/conv2d*.cu through
dlgpu.cuda.conv2d, or NumPy/numba through dlgpu.cpu.conv2d).

Memory formats (NCHW, or channels_last where the backend reads it:
:func:`channels_last_call`) are described in :func:`conv2d`'s docstring.

Grouped and depthwise convolution (``groups`` > 1) run as one backend call per
group, on that group's channels: neither backend's kernels take groups yet, so
this first version pays a copy of x (and grad_y) into per-group contiguous
slices and ``groups`` launches instead of one.  An empty batch (N = 0) returns
empty (or, for the weight and bias gradients, zero) results without a launch.
"""

from __future__ import annotations

import numbers

from dlgpu import memory_format
from dlgpu.backend import select
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.device import array_module
from dlgpu.ops.validate import (
    check_activation,
    check_allocation,
    check_float,
    check_ndim,
    check_nonempty,
    check_out,
    check_saved_output,
    contiguous,
    new_output,
    output_dtype,
    pair,
    public,
    window_output_size,
    zeros_result,
)
from dlgpu.precision import resolve_precision

__all__ = ["conv2d", "conv2d_backward"]


def resolve_padding(op: str, padding, kernel_size, stride, dilation) -> tuple[int, int]:
    """Explicit (h, w) padding for an int, a pair, or PyTorch's ``"valid"`` (none) and ``"same"``.

    ``"same"`` keeps the input size at stride 1 by padding dilation * (kernel - 1) / 2 on
    each side.  Where that total is odd PyTorch pads one more row or column at the end,
    which dlgpu's symmetric padding cannot express, so such a kernel is refused (as a
    strided ``"same"`` is by PyTorch itself).
    """
    if not isinstance(padding, str):
        return pair(op, "padding", padding, minimum=0)
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ArgumentError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if pair(op, "stride", stride, minimum=1) != (1, 1):
        raise ArgumentError(f"{op}: padding='same' needs stride 1, got stride={stride!r}")
    dilation = pair(op, "dilation", dilation, minimum=1)
    totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    if any(total % 2 for total in totals):
        raise ArgumentError(
            f"{op}: padding='same' with a {kernel_size[0]}x{kernel_size[1]} kernel and dilation {dilation} pads "
            "unevenly (one more row or column at the end), which dlgpu's symmetric padding cannot do; pad explicitly"
        )
    return totals[0] // 2, totals[1] // 2


def groups_argument(op: str, groups) -> int:
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ArgumentError(f"{op}: groups must be a positive int, got {groups!r}")
    return int(groups)


def check_groups(op: str, groups, in_channels: int, weight_shape) -> int:
    """``groups`` as an int dividing both channel counts, with weight (K, C / groups, R, S)."""
    groups = groups_argument(op, groups)
    k, c_w = weight_shape[0], weight_shape[1]
    if in_channels % groups or k % groups:
        raise ShapeError(
            f"{op}: groups={groups} must divide the input channels ({in_channels}) and the output channels ({k})"
        )
    if c_w * groups != in_channels:
        expect = f"{in_channels} // groups = {in_channels // groups}" if groups > 1 else f"{in_channels}"
        raise ShapeError(
            f"{op}: x has {in_channels} channels but weight {tuple(weight_shape)} expects {c_w * groups} "
            f"(OIHW: weight.shape[1] must be {expect})"
        )
    return groups


def geometry(op: str, x, weight, bias, stride, padding, dilation, groups=1):
    """Normalized (stride, padding, dilation) pairs and the output shape (N, K, P, Q).

    ``padding`` may be "same" or "valid" (see :func:`resolve_padding`); ``groups``
    must divide the channels, with weight (K, C / groups, R, S).
    """
    check_ndim(op, "x", x, 4, "NCHW")
    check_ndim(op, "weight", weight, 4, "OIHW")
    n, c, h, w = x.shape
    k, _, r, s = weight.shape
    check_groups(op, groups, c, weight.shape)
    if bias is not None:
        check_ndim(op, "bias", bias, 1, "(out_channels,)")
        if bias.shape[0] != k:
            raise ShapeError(f"{op}: bias has {bias.shape[0]} elements, weight has {k} output channels")
    padding = resolve_padding(op, padding, (r, s), stride, dilation)
    stride = pair(op, "stride", stride, minimum=1)
    dilation = pair(op, "dilation", dilation, minimum=1)
    p = window_output_size(op, h, r, stride[0], padding[0], dilation[0], "height")
    q = window_output_size(op, w, s, stride[1], padding[1], dilation[1], "width")
    return stride, padding, dilation, (n, k, p, q)


def channels_last_call(backend, precision: str, groups: int, *arrays) -> bool:
    """Whether a call runs on channels_last storage: an array of it (x, weight, grad_y, y or out) is channels_last
    (dlgpu.memory_format), the backend takes that layout at this precision (Backend.takes_channels_last), and the
    convolution is not grouped (the per-group loop slices NCHW channels).  Otherwise every array is made
    C-contiguous, NCHW, as before."""
    return (groups == 1 and any(memory_format.is_channels_last(a) for a in arrays if a is not None)
            and backend.takes_channels_last(precision))


def _group_slices(groups: int, in_channels: int, out_channels: int):
    c, k = in_channels // groups, out_channels // groups
    return [(slice(g * c, (g + 1) * c), slice(g * k, (g + 1) * k)) for g in range(groups)]


def _channels(xp, array, channels: slice):
    """array[:, channels] as a C-contiguous array (a copy unless N is 1)."""
    return xp.ascontiguousarray(array[:, channels])


def grouped_conv2d(backend, x, weight, bias, stride, padding, dilation, groups, activation, precision, out):
    """``backend.conv2d`` over ``groups`` channel groups (one call when groups is 1), arguments normalized."""
    if groups == 1:
        return backend.conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out)
    xp = array_module(x)
    parts = [
        backend.conv2d(_channels(xp, x, cs), weight[ks], None if bias is None else bias[ks],
                       stride, padding, dilation, activation, precision, None)
        for cs, ks in _group_slices(groups, x.shape[1], weight.shape[0])
    ]
    return xp.concatenate(parts, axis=1, out=out)


def grouped_conv2d_backward(backend, grad_y, x, weight, y, stride, padding, dilation, groups, activation, precision):
    """``backend.conv2d_backward`` over ``groups`` channel groups: grad_x, grad_w, grad_b joined per group."""
    if groups == 1:
        return backend.conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision)
    xp = array_module(x)
    parts = [
        backend.conv2d_backward(_channels(xp, grad_y, ks), _channels(xp, x, cs), weight[ks],
                                None if y is None else _channels(xp, y, ks), stride, padding, dilation, activation,
                                precision)
        for cs, ks in _group_slices(groups, x.shape[1], weight.shape[0])
    ]
    grad_x, grad_w, grad_b = zip(*parts)
    return xp.concatenate(grad_x, axis=1), xp.concatenate(grad_w), xp.concatenate(grad_b)


@public
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, precision=None,
           out=None, out_dtype=None):
    """y = act(conv(x, weight) + bias): x (N, C, H, W), weight (K, C / groups, R, S), bias (K,) or None.

    Cross-correlation, as in PyTorch, with PyTorch's argument order (stride,
    padding, dilation and groups may be positional).  Returns (N, K, P, Q) with
    P = (H + 2*pad_h - dil_h*(R-1) - 1) // stride_h + 1, likewise Q.
    ``padding`` is an int, a pair, "valid" or "same" (stride 1, symmetric
    padding only).  ``groups`` splits the channels into that many independent
    convolutions (groups = C: depthwise).  An empty batch (N = 0) gives an empty
    result.  Layout (memory format): x and weight are stored NCHW / OIHW
    (C-contiguous) or channels_last (NHWC / KRSC storage under the same shape,
    as PyTorch's ``torch.channels_last``; dlgpu.memory_format).  Where the
    backend reads channels_last (the CUDA backend at tf32, bf16 or fp16) and
    groups is 1, channels_last arrays are read as they lie and y comes back
    channels_last when x or weight is one (an (N, K, P, Q) view of (N, P, Q, K)
    storage); ``out`` may then be channels_last too.  Otherwise they, and other
    strided inputs (a slice), are copied once to NCHW, y is C-contiguous and so
    must ``out`` be.  16-bit storage: float16 / bfloat16 operands are read as
    stored and accumulated in float32 (``precision`` None, or the storage's
    own); y is rounded once to their dtype, or left float32 with
    ``out_dtype=np.float32``.  conv2d_backward's gradients take the operands'
    dtype.
    """
    op = "conv2d"
    backend = select(op, x=x, weight=weight, bias=bias)
    dtype = check_float(op, backend, x=x, weight=weight, bias=bias)
    stride, padding, dilation, shape = geometry(op, x, weight, bias, stride, padding, dilation, groups)
    groups = int(groups)
    check_activation(op, activation)
    check_nonempty(op, "x", x, batch_ok=True)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    result = output_dtype(op, dtype, out_dtype)
    check_allocation(op, backend, y=(shape, result))
    if shape[0] == 0:
        check_out(op, out, backend=backend, shape=shape, dtype=result, inputs={"x": x, "weight": weight, "bias": bias})
        return zeros_result(x, shape, result, out)
    layout = channels_last_call(backend, precision, groups, x, weight, out)
    x, weight, bias = contiguous(op, x=x, weight=weight, bias=bias, channels_last_ok=layout)
    check_out(op, out, backend=backend, shape=shape, dtype=result, inputs={"x": x, "weight": weight, "bias": bias},
              channels_last_ok=layout)
    if out is None and result != dtype:
        out = (memory_format.as_nchw(new_output(x, [shape[i] for i in memory_format.TO_NHWC], result)) if layout
               else new_output(x, shape, result))
    return grouped_conv2d(backend, x, weight, bias, stride, padding, dilation, groups, activation, precision, out)


@public
def conv2d_backward(grad_y, x, weight, *, y=None, stride=1, padding=0, dilation=1, groups=1, activation=None,
                    precision=None):
    """Gradients of conv2d: returns (grad_x, grad_w, grad_b); ``y`` supplies the ReLU mask.

    Takes conv2d's stride, padding (including "same"/"valid"), dilation and
    groups.  An empty batch gives an empty grad_x and zero grad_w and grad_b.
    Layout (memory format) as conv2d's: on channels_last storage (any of
    grad_y, x, weight, y channels_last, where the backend reads it), grad_x
    comes back in x's format and grad_w in weight's; otherwise strided inputs
    are copied once and the gradients are C-contiguous.
    """
    op = "conv2d_backward"
    backend = select(op, grad_y=grad_y, x=x, weight=weight, y=y)
    dtype = check_float(op, backend, grad_y=grad_y, x=x, weight=weight, y=y)
    stride, padding, dilation, shape = geometry(op, x, weight, None, stride, padding, dilation, groups)
    groups = int(groups)
    check_ndim(op, "grad_y", grad_y, 4, "NKPQ")
    if tuple(grad_y.shape) != shape:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {shape}")
    check_activation(op, activation)
    check_saved_output(op, activation, y, shape)
    check_nonempty(op, "x", x, batch_ok=True)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    if shape[0] == 0:
        return (zeros_result(x, x.shape, dtype), zeros_result(x, weight.shape, dtype),
                zeros_result(x, weight.shape[:1], dtype))
    layout = channels_last_call(backend, precision, groups, grad_y, x, weight, y)
    grad_y, x, weight, y = contiguous(op, grad_y=grad_y, x=x, weight=weight, y=y, channels_last_ok=layout)
    return grouped_conv2d_backward(backend, grad_y, x, weight, y, stride, padding, dilation, groups, activation,
                                   precision)
