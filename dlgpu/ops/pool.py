"""The public 2-D max pooling with argmax, and its backward.

Each op validates its whole call, then calls the backend its arrays select
(kernels/pool.cu through dlgpu.cuda.pool,
or numba through dlgpu.cpu.pool).  argmax is int32: the position h * W + w
of the chosen element in its unpadded (n, c) input plane.
"""

from __future__ import annotations

import numbers
import numpy as np

from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.backend import select
from dlgpu.ops.validate import (
    check_allocation,
    check_float,
    check_index_dtype,
    check_index_range,
    check_ndim,
    check_nonempty,
    contiguous,
    index_check,
    pair,
    public,
    window_output_size,
    zeros_result,
)

__all__ = ["max_pool2d", "max_pool2d_backward"]

# argmax in [0, H * W): checked on the host by the CPU backend (and in debug mode), else by the kernels.
ARGMAX = index_check("max_pool2d_backward", "argmax holds {value}, outside the input plane [0, {limit})",
                     "argmax element", "pool", "DLGPU_ERROR_POOL_ARGMAX")


def window(op: str, input_shape, kernel_size, stride, padding):
    """Normalized (kernel, stride, padding) pairs and the output (P, Q) of max pooling on an (N, C, H, W) input."""
    kernel = pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    for axis, k, p in (("height", kernel[0], padding[0]), ("width", kernel[1], padding[1])):
        if p > k // 2:
            raise ArgumentError(f"{op}: padding {p} along {axis} exceeds half the kernel size {k}")
    p = window_output_size(op, input_shape[2], kernel[0], stride[0], padding[0], 1, "height")
    q = window_output_size(op, input_shape[3], kernel[1], stride[1], padding[1], 1, "width")
    return kernel, stride, padding, (p, q)


def geometry(op: str, x, kernel_size, stride, padding):
    """Normalized (kernel, stride, padding) pairs and the output shape (N, C, P, Q) of max pooling."""
    check_ndim(op, "x", x, 4, "NCHW")
    kernel, stride, padding, (p, q) = window(op, tuple(x.shape), kernel_size, stride, padding)
    return kernel, stride, padding, (x.shape[0], x.shape[1], p, q)


def backward_geometry(op: str, grad_y, input_shape, kernel_size, stride, padding):
    """The window's pairs and input_shape as ints, after checking that pooling an input of
    ``input_shape`` with this window gives grad_y's shape (anything else would route to wrong places)."""
    check_ndim(op, "grad_y", grad_y, 4, "NCPQ")
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 4
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0 for d in input_shape)
    ):
        raise ArgumentError(f"{op}: input_shape must be 4 non-negative ints (N, C, H, W), got {input_shape!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if 0 in input_shape[1:]:
        raise ShapeError(f"{op}: input_shape {input_shape} has an empty dimension; only the batch (N) may be 0")
    if input_shape[:2] != tuple(grad_y.shape[:2]):
        raise ShapeError(f"{op}: input_shape {input_shape} and grad_y {tuple(grad_y.shape)} differ in N or C")
    kernel, stride, padding, pq = window(op, input_shape, kernel_size, stride, padding)
    if pq != tuple(grad_y.shape[2:]):
        raise ShapeError(
            f"{op}: pooling a {input_shape[2]}x{input_shape[3]} input with kernel_size {kernel}, stride {stride}, "
            f"padding {padding} gives {pq[0]}x{pq[1]} outputs, but grad_y is {tuple(grad_y.shape)}: "
            "input_shape and the window must be those of the forward call"
        )
    return kernel, stride, padding, input_shape


@public
def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over (kh, kw) windows of an NCHW array: returns (y, argmax).

    stride defaults to kernel_size; padding (at most half the kernel, as in
    PyTorch) never wins.  argmax (int32) is h * W + w in the unpadded input
    plane; ties go to the first element of the window in row-major order, and
    a NaN in the window is propagated.  An empty batch (N = 0) gives empty
    results.  Layout: a strided x is copied once.
    """
    op = "max_pool2d"
    backend = select(op, x=x)
    dtype = check_float(op, backend, x=x)
    kernel, stride, padding, shape = geometry(op, x, kernel_size, stride, padding)
    check_nonempty(op, "x", x, batch_ok=True)
    check_allocation(op, backend, y=(shape, dtype), argmax=(shape, np.int32))
    if shape[0] == 0:
        return zeros_result(x, shape, dtype), zeros_result(x, shape, np.int32)
    (x,) = contiguous(op, x=x)
    return backend.max_pool2d(x, kernel, stride, padding)


@public
def max_pool2d_backward(grad_y, argmax, input_shape, kernel_size, stride=None, padding=0):
    """grad_x of ``input_shape``: grad_y routed back to the argmax positions; overlapping windows add.

    Takes the forward call's window, as PyTorch's max_pool2d_with_indices_backward
    does, and refuses an ``input_shape`` and window that cannot have produced
    grad_y's shape.  argmax must be max_pool2d's: an entry that points outside
    its own window contributes nothing (on every backend).
    Layout: strided inputs are copied once.
    """
    op = "max_pool2d_backward"
    backend = select(op, grad_y=grad_y, argmax=argmax)
    dtype = check_float(op, backend, grad_y=grad_y)
    check_index_dtype(op, "argmax", argmax, (np.int32,), "int32 (as max_pool2d returns it)")
    check_ndim(op, "grad_y", grad_y, 4, "NCPQ")
    if tuple(argmax.shape) != tuple(grad_y.shape):
        raise ShapeError(f"{op}: argmax has shape {tuple(argmax.shape)} but grad_y has {tuple(grad_y.shape)}")
    kernel, stride, padding, input_shape = backward_geometry(op, grad_y, input_shape, kernel_size, stride, padding)
    check_allocation(op, backend, grad_x=(input_shape, dtype))
    if input_shape[0] == 0:
        return zeros_result(grad_y, input_shape, dtype)
    grad_y, argmax = contiguous(op, grad_y=grad_y, argmax=argmax)
    check_index_range(ARGMAX, backend, argmax, input_shape[2] * input_shape[3])
    return backend.max_pool2d_backward(grad_y, argmax, input_shape, kernel, stride, padding)
