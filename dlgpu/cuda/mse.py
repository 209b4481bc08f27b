"""Launchers for kernels/mse.cu: the squared error and its gradient.

y, t: float32 C-contiguous arrays of one shape (rows, ...), rows >= 1 (dlgpu.functional
checks the shapes and handles an empty batch before calling).
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, Launch, grid_stride_blocks, require_float32
from dlgpu.errors import ShapeError

FAMILY = "mse"
# The per-block sums' block, and the single block that adds them up (one partial per thread at most).
PARTIAL_BLOCK = 256
FINISH_BLOCK = 1024


def _check(op: str, y, t) -> tuple[int, int]:
    require_float32(op, y=y, t=t)
    if y.ndim < 1 or tuple(t.shape) != tuple(y.shape) or y.shape[0] < 1:
        raise ShapeError(f"{op}: y {tuple(y.shape)} and t {tuple(t.shape)} must be one shape with rows >= 1")
    return int(y.shape[0]), int(y.size)


def mse_loss(y, t, *, executor=None):
    """The mean over rows of 0.5 * sum((y - t)^2) over each row: a 0-d float32 array."""
    op = "mse_loss"
    executor = resolve_executor(executor)
    rows, n = _check(op, y, t)
    xp = executor.xp
    blocks = grid_stride_blocks(n, PARTIAL_BLOCK, executor)
    partial = xp.empty((blocks,), dtype=np.float32)
    loss = xp.empty((), dtype=np.float32)
    executor.launch(Launch(FAMILY, "mse_loss_partial_f32", (blocks, 1, 1), (PARTIAL_BLOCK, 1, 1),
                           (y, t, partial, np.int64(n))))
    executor.launch(Launch(FAMILY, "mse_loss_finish_f32", (1, 1, 1), (FINISH_BLOCK, 1, 1),
                           (partial, loss, np.int32(blocks), np.float32(0.5 / rows))))
    return loss


def mse_loss_backward(y, t, *, executor=None):
    """dE/dy = (y - t) / rows, float32 of y's shape."""
    op = "mse_loss_backward"
    executor = resolve_executor(executor)
    rows, n = _check(op, y, t)
    grad = executor.xp.empty(tuple(y.shape), dtype=np.float32)
    # A thread handles about four elements (one float4) per trip of the grid-stride loop.
    blocks = grid_stride_blocks(math.ceil(n / 4), BLOCK, executor)
    executor.launch(Launch(FAMILY, "mse_loss_backward_f32", (blocks, 1, 1), (BLOCK, 1, 1),
                           (y, t, grad, np.int64(n), np.float32(1.0 / rows))))
    return grad


class MseOps:
    """The CUDA backend's squared error (see dlgpu.backend.Backend)."""

    mse_loss = staticmethod(mse_loss)
    mse_loss_backward = staticmethod(mse_loss_backward)
