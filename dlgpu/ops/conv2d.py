"""The public 2-D convolution, forward and backward (cross-correlation, as in PyTorch).

Each op validates its whole call, then calls the backend its arrays select
(kernels/conv2d*.cu through
dlgpu.cuda.conv2d, or NumPy/numba through dlgpu.cpu.conv2d).
"""

from __future__ import annotations

from dlgpu.errors import ShapeError
from dlgpu.backend import select
from dlgpu.ops.validate import (
    check_activation,
    check_float,
    check_ndim,
    check_out,
    check_saved_output,
    contiguous,
    new_output,
    output_dtype,
    pair,
    public,
    window_output_size,
)
from dlgpu.precision import resolve_precision

__all__ = ["conv2d", "conv2d_backward"]




def geometry(op: str, x, weight, bias, stride, padding, dilation):
    """Normalized (stride, padding, dilation) pairs and the output shape (N, K, P, Q)."""
    check_ndim(op, "x", x, 4, "NCHW")
    check_ndim(op, "weight", weight, 4, "OIHW")
    n, c, h, w = x.shape
    k, c_w, r, s = weight.shape
    if c_w != c:
        raise ShapeError(f"{op}: x has {c} channels but weight {tuple(weight.shape)} expects {c_w} (OIHW)")
    if bias is not None:
        check_ndim(op, "bias", bias, 1, "(out_channels,)")
        if bias.shape[0] != k:
            raise ShapeError(f"{op}: bias has {bias.shape[0]} elements, weight has {k} output channels")
    stride = pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    dilation = pair(op, "dilation", dilation, minimum=1)
    p = window_output_size(op, h, r, stride[0], padding[0], dilation[0], "height")
    q = window_output_size(op, w, s, stride[1], padding[1], dilation[1], "width")
    return stride, padding, dilation, (n, k, p, q)


@public
def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, activation=None, precision=None, out=None,
           out_dtype=None):
    """y = act(conv(x, weight) + bias): x (N, C, H, W), weight (K, C, R, S), bias (K,) or None.

    Cross-correlation, as in PyTorch.  Returns (N, K, P, Q) with
    P = (H + 2*pad_h - dil_h*(R-1) - 1) // stride_h + 1, likewise Q.
    Layout: strided inputs (a channels-last view, a slice) are copied once;
    ``out`` must be C-contiguous.  16-bit storage: float16 / bfloat16 operands
    are read as stored and accumulated in float32 (``precision`` None, or the
    storage's own); y is rounded once to their dtype, or left float32 with
    ``out_dtype=np.float32``.  conv2d_backward's gradients take the operands' dtype.
    """
    op = "conv2d"
    backend = select(op, x=x, weight=weight, bias=bias)
    dtype = check_float(op, backend, x=x, weight=weight, bias=bias)
    stride, padding, dilation, shape = geometry(op, x, weight, bias, stride, padding, dilation)
    check_activation(op, activation)
    x, weight, bias = contiguous(op, x=x, weight=weight, bias=bias)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    result = output_dtype(op, dtype, out_dtype)
    check_out(op, out, backend=backend, shape=shape, dtype=result, inputs={"x": x, "weight": weight, "bias": bias})
    if out is None and result != dtype:
        out = new_output(x, shape, result)
    return backend.conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out)


@public
def conv2d_backward(grad_y, x, weight, *, y=None, stride=1, padding=0, dilation=1, activation=None, precision=None):
    """Gradients of conv2d: returns (grad_x, grad_w, grad_b); ``y`` supplies the ReLU mask.

    Layout: strided inputs are copied once.
    """
    op = "conv2d_backward"
    backend = select(op, grad_y=grad_y, x=x, weight=weight, y=y)
    dtype = check_float(op, backend, grad_y=grad_y, x=x, weight=weight, y=y)
    stride, padding, dilation, shape = geometry(op, x, weight, None, stride, padding, dilation)
    check_ndim(op, "grad_y", grad_y, 4, "NKPQ")
    if tuple(grad_y.shape) != shape:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {shape}")
    check_activation(op, activation)
    check_saved_output(op, activation, y, shape)
    grad_y, x, weight, y = contiguous(op, grad_y=grad_y, x=x, weight=weight, y=y)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    return backend.conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision)
