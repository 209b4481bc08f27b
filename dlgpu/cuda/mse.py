"""Launchers for kernels/mse.cu: the squared error and its gradient.

y, t: C-contiguous arrays of one shape (rows, ...), rows >= 1, and one storage dtype: float32,
bfloat16 or float16 (dlgpu.functional checks the shapes and handles an empty batch before
calling).  16-bit values are summed in double per thread and in float across threads; the loss is
float32 whatever the dtype, the gradient in the inputs' dtype (rounded once).
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, MAP_CHUNK, Launch, grid_stride_blocks, require_storage, storage_suffix
from dlgpu.errors import ShapeError

FAMILY = "mse"
# The per-block sums' block, and the single block that adds them up (one partial per thread at most).
PARTIAL_BLOCK = 256
FINISH_BLOCK = 1024


def _check(op: str, y, t) -> tuple[int, int, str]:
    """(rows, elements, the kernels' storage suffix)."""
    require_storage(op, y.dtype, y=y, t=t)
    if y.ndim < 1 or tuple(t.shape) != tuple(y.shape) or y.shape[0] < 1:
        raise ShapeError(f"{op}: y {tuple(y.shape)} and t {tuple(t.shape)} must be one shape with rows >= 1")
    return int(y.shape[0]), int(y.size), storage_suffix(op, y.dtype)


def _blocks(n: int, block: int, executor) -> int:
    # A thread handles about one chunk (MAP_CHUNK elements) per trip of map_vec's grid-stride loop.
    return grid_stride_blocks(math.ceil(n / MAP_CHUNK), block, executor)


def mse_loss(y, t, *, executor=None):
    """The mean over rows of 0.5 * sum((y - t)^2) over each row: a 0-d float32 array, whatever y's dtype."""
    op = "mse_loss"
    executor = resolve_executor(executor)
    rows, n, suffix = _check(op, y, t)
    xp = executor.xp
    blocks = _blocks(n, PARTIAL_BLOCK, executor)
    partial = xp.empty((blocks,), dtype=np.float32)
    loss = xp.empty((), dtype=np.float32)
    executor.launch(Launch(FAMILY, f"mse_loss_partial_{suffix}", (blocks, 1, 1), (PARTIAL_BLOCK, 1, 1),
                           (y, t, partial, np.int64(n))))
    executor.launch(Launch(FAMILY, "mse_loss_finish_f32", (1, 1, 1), (FINISH_BLOCK, 1, 1),
                           (partial, loss, np.int32(blocks), np.float32(0.5 / rows))))
    return loss


def mse_loss_backward(y, t, *, executor=None):
    """dE/dy = (y - t) / rows, of y's shape and dtype."""
    op = "mse_loss_backward"
    executor = resolve_executor(executor)
    rows, n, suffix = _check(op, y, t)
    grad = executor.xp.empty(tuple(y.shape), dtype=y.dtype)
    blocks = _blocks(n, BLOCK, executor)
    executor.launch(Launch(FAMILY, f"mse_loss_backward_{suffix}", (blocks, 1, 1), (BLOCK, 1, 1),
                           (y, t, grad, np.int64(n), np.float32(1.0 / rows))))
    return grad


class MseOps:
    """The CUDA backend's squared error (see dlgpu.backend.Backend)."""

    mse_loss = staticmethod(mse_loss)
    mse_loss_backward = staticmethod(mse_loss_backward)
