"""Launchers for kernels/pool.cu: 2-D max pooling with argmax, and its backward.

x (N, C, H, W) C-contiguous float32, bfloat16 or float16 (y and grad_x in that
dtype; gradient sums in float32, rounded once); kernel, stride, padding are (h, w)
pairs with padding <= kernel // 2 (dlgpu.functional normalizes and checks them).
argmax is int32, h * W + w in the unpadded input plane.  The backward kernels never
route through an argmax outside the plane and report it in the device error flag
(dlgpu.cuda.error_flag); nothing here reads argmax back to check it.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda import elementwise, error_flag, kernel_decls
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import (
    MAX_GRID_Y,
    Launch,
    fast_divisors,
    multiprocessor_count,
    require_storage,
    storage_suffix,
)
from dlgpu.errors import ArgumentError, DtypeError, ShapeError
from dlgpu.window import output_size

FAMILY = "pool"
# Window-free backward: one warp per plane, 4 planes per block.
PLANES_BLOCK = 128
# The forward and window-known backward kernels' block, and the blocks per SM their __launch_bounds__
# promise (kernels/pool.cu): one full wave of the 2-D grid.
_POOL = kernel_decls.integer_defines("pool.cu")
POOL_THREADS, POOL_MIN_BLOCKS = _POOL["POOL_THREADS"], _POOL["POOL_MIN_BLOCKS"]


def _plane_grid(planes: int, per_plane: int, executor) -> tuple[int, int, int]:
    """A 2-D grid for kernels/pool.cu's grid-stride loops: x over a plane's elements (one per thread),
    y over planes, at most POOL_MIN_BLOCKS blocks per SM in all (one wave; the loops take the rest)."""
    wave = POOL_MIN_BLOCKS * multiprocessor_count(executor)
    x = max(1, min(math.ceil(per_plane / POOL_THREADS), wave))
    y = max(1, min(planes, wave // x, MAX_GRID_Y))
    return x, y, 1


def _window_args(kernel, stride, padding) -> tuple[np.int32, ...]:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or ph > kh // 2 or pw > kw // 2:
        raise ArgumentError(
            f"max_pool2d: need kernel >= 1, stride >= 1, 0 <= padding <= kernel // 2; "
            f"got kernel={kernel}, stride={stride}, padding={padding}"
        )
    return tuple(np.int32(v) for v in (kh, kw, sh, sw, ph, pw))


def max_pool2d(x, kernel, stride, padding, *, executor=None):
    """(y, argmax), both (N, C, P, Q): y in x's dtype, argmax int32."""
    op = "max_pool2d"
    executor = resolve_executor(executor)
    suffix = storage_suffix(op, x.dtype)
    require_storage(op, x.dtype, x=x)
    if x.ndim != 4:
        raise ShapeError(f"{op}: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    N, C, H, W = (int(d) for d in x.shape)
    window = _window_args(kernel, stride, padding)
    P = output_size(H, kernel[0], stride[0], padding[0])
    Q = output_size(W, kernel[1], stride[1], padding[1])
    if P < 1 or Q < 1:
        raise ShapeError(f"{op}: kernel {kernel} does not fit input {H}x{W} padded by {padding}")
    xp = executor.xp
    y = xp.empty((N, C, P, Q), dtype=x.dtype)
    argmax = xp.empty((N, C, P, Q), dtype=np.int32)
    executor.launch(
        Launch(
            FAMILY,
            f"max_pool2d_forward_{suffix}",
            _plane_grid(N * C, P * Q, executor),
            (POOL_THREADS, 1, 1),
            (x, y, argmax, np.int64(N * C), np.int32(H), np.int32(W), np.int32(P), np.int32(Q), *window,
             *fast_divisors(Q)),
        )
    )
    return y, argmax


def max_pool2d_backward(grad_y, argmax, input_shape, kernel=None, stride=None, padding=None, *, executor=None):
    """grad_x (N, C, H, W) in grad_y's dtype: grad_y added at argmax, overlapping windows summed.

    With the forward pass's window (kernel, stride, padding pairs; the backend
    interface always passes it) each thread gathers for one input element from
    the few windows that contain it.  Without it (``kernel=None``) one warp per
    (n, c) plane walks the outputs in order, into a float32 grad_x (16-bit
    grad_y: rounded to its dtype by one conversion afterwards).  Both sum in a
    fixed order: deterministic.
    """
    op = "max_pool2d_backward"
    executor = resolve_executor(executor)
    dtype = np.dtype(grad_y.dtype)
    suffix = storage_suffix(op, dtype)
    require_storage(op, dtype, grad_y=grad_y)
    if np.dtype(argmax.dtype) != np.int32:
        raise DtypeError(f"{op}: argmax must be int32, got {np.dtype(argmax.dtype).name}")
    if grad_y.ndim != 4 or tuple(argmax.shape) != tuple(grad_y.shape):
        raise ShapeError(f"{op}: grad_y {tuple(grad_y.shape)} and argmax {tuple(argmax.shape)} must be one 4-D shape")
    N, C, H, W = (int(d) for d in input_shape)
    P, Q = int(grad_y.shape[2]), int(grad_y.shape[3])
    if (N, C) != tuple(int(d) for d in grad_y.shape[:2]):
        raise ShapeError(f"{op}: input_shape {tuple(input_shape)} and grad_y {tuple(grad_y.shape)} differ in N or C")
    assert argmax.flags.c_contiguous, f"{op}: argmax must be C-contiguous"
    planes = N * C
    if kernel is not None:
        window = (kernel, stride, padding)
        expected = (output_size(H, kernel[0], stride[0], padding[0]), output_size(W, kernel[1], stride[1], padding[1]))
        if expected != (P, Q):
            raise ShapeError(f"{op}: window {window} on a {H}x{W} input does not give grad_y's {P}x{Q}")
        grad_x = executor.xp.empty((N, C, H, W), dtype=dtype)
        args = (grad_y, argmax, grad_x, np.int64(planes), np.int32(H), np.int32(W), np.int32(P), np.int32(Q),
                *_window_args(*window), *fast_divisors(W, *stride), error_flag.flag(executor))
        grid = _plane_grid(planes, H * W, executor)
        executor.launch(Launch(FAMILY, f"max_pool2d_backward_{suffix}", grid, (POOL_THREADS, 1, 1), args))
        return grad_x
    grad_x = executor.xp.empty((N, C, H, W), dtype=np.float32)
    warps_per_block = PLANES_BLOCK // 32
    blocks = min(math.ceil(planes / warps_per_block), 2**31 - 1)
    executor.launch(
        Launch(
            FAMILY,
            f"max_pool2d_backward_planes_{suffix}",
            (blocks, 1, 1),
            (PLANES_BLOCK, 1, 1),
            (grad_y, argmax, grad_x, np.int64(planes), np.int32(H * W), np.int32(P * Q), error_flag.flag(executor)),
        )
    )
    return elementwise.convert(grad_x, dtype, executor=executor)


class PoolOps:
    """The CUDA backend's pooling (see dlgpu.backend.Backend)."""

    max_pool2d = staticmethod(max_pool2d)
    # The interface carries the window, so this takes the gather kernel.
    max_pool2d_backward = staticmethod(max_pool2d_backward)
