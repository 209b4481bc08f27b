"""Reference 2-D max pooling with argmax, in float64.

x (N, C, H, W) -> y (N, C, P, Q), argmax (N, C, P, Q) int32 with
    P = (H + 2*ph - kh) // sh + 1     (Q likewise with w)
argmax holds h*W + w, the position of the chosen element in the UNPADDED plane (n, c).
Padding counts as -inf and is never chosen (padding <= kernel // 2, so every window
holds at least one real element).  In each window the first real element in
row-major (kh, kw) order starts as the best; a later one replaces it when it is NaN
or strictly greater; a NaN best stays.  So NaN propagates and ties go to the first.
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.reference.conv2d import pair
from dlgpu.window import output_size

__all__ = ["max_pool2d", "max_pool2d_backward"]


def _geometry(x_shape, kernel_size, stride, padding):
    kernel = pair("max_pool2d", "kernel_size", kernel_size)
    stride = kernel if stride is None else pair("max_pool2d", "stride", stride)
    padding = pair("max_pool2d", "padding", padding)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ArgumentError(
            f"max_pool2d: need kernel_size >= 1, stride >= 1, padding >= 0; got kernel_size={kernel}, "
            f"stride={stride}, padding={padding}"
        )
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ArgumentError(f"max_pool2d: padding {padding} must be at most half of kernel_size {kernel}")
    if len(x_shape) != 4:
        raise ShapeError(f"max_pool2d: x must be 4-D (NCHW), got shape {x_shape}")
    _, _, H, W = x_shape
    P = output_size(H, kernel[0], stride[0], padding[0])
    Q = output_size(W, kernel[1], stride[1], padding[1])
    if P < 1 or Q < 1:
        raise ShapeError(f"max_pool2d: kernel {kernel} does not fit input {H}x{W} padded by {padding}")
    return kernel, stride, padding, P, Q


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """(y, argmax) of max pooling; stride defaults to kernel_size."""
    x = np.asarray(x, dtype=np.float64)
    (kh, kw), (sh, sw), (ph, pw), P, Q = _geometry(x.shape, kernel_size, stride, padding)
    N, C, H, W = x.shape
    # Window (p, q) starts at row p*sh - ph, column q*sw - pw of the unpadded plane.
    row_starts = np.arange(P) * sh - ph
    col_starts = np.arange(Q) * sw - pw
    best = np.full((N, C, P, Q), -np.inf)
    argmax = np.full((N, C, P, Q), -1, dtype=np.int64)  # -1: no real element seen yet
    for i in range(kh):
        for j in range(kw):
            rows = row_starts + i
            cols = col_starts + j
            valid = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
            value = x[:, :, np.clip(rows, 0, H - 1)][:, :, :, np.clip(cols, 0, W - 1)]
            position = (rows[:, None] * W + cols[None, :]).astype(np.int64)
            replace = valid & (
                (argmax < 0) | (~np.isnan(best) & (np.isnan(value) | (value > best)))
            )
            best = np.where(replace, value, best)
            argmax = np.where(replace, position, argmax)
    return best, argmax.astype(np.int32)


def max_pool2d_backward(grad_y, argmax, input_shape, kernel_size, stride=None, padding=0) -> np.ndarray:
    """The gradient of max_pool2d with this window: each window's grad_y goes to the tap argmax names.

    Taps are visited as in the forward pass; a window whose argmax names none of its own
    taps adds nothing.  Overlapping windows add.
    """
    grad_y = np.asarray(grad_y, dtype=np.float64)
    argmax = np.asarray(argmax)
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 4:
        raise ShapeError(f"max_pool2d_backward: input_shape must have 4 entries, got {input_shape}")
    N, C, H, W = input_shape
    (kh, kw), (sh, sw), (ph, pw), P, Q = _geometry(input_shape, kernel_size, stride, padding)
    if grad_y.shape != argmax.shape or grad_y.shape != (N, C, P, Q):
        raise ShapeError(
            f"max_pool2d_backward: grad_y {grad_y.shape} and argmax {argmax.shape} must both be {(N, C, P, Q)}, "
            f"the output of this window on {input_shape}"
        )
    if argmax.size and (argmax.min() < 0 or argmax.max() >= H * W):
        raise ArgumentError(f"max_pool2d_backward: argmax values must lie in [0, {H * W}), got "
                            f"[{argmax.min()}, {argmax.max()}]")
    grad_x = np.zeros((N * C, H * W))
    planes = np.arange(N * C).reshape(N, C, 1, 1) * (H * W)
    row_starts = np.arange(P) * sh - ph
    col_starts = np.arange(Q) * sw - pw
    for i in range(kh):
        for j in range(kw):
            rows = row_starts + i
            cols = col_starts + j
            valid = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
            position = rows[:, None] * W + cols[None, :]
            hit = valid & (argmax == position)
            # np.add.at: several windows may route to one element (overlapping windows add)
            np.add.at(grad_x.reshape(-1), (planes + argmax)[hit], grad_y[hit])
    return grad_x.reshape(N, C, H, W)
