"""Launcher for kernels/bias_grad.cu: the bias gradient, deterministic.

grad_b[c] = sum of grad_y[n, c, ...] over n and the spatial positions, for
grad_y of shape (N, C) or (N, C, H, W), C-contiguous float32, bfloat16 or
float16 (sums in float32; grad_b in grad_y's dtype, rounded once).  With ``y``
(the forward output of a fused ReLU, grad_y's shape) grad_y is first masked
by (y > 0).  Two passes in a fixed order (column sums of row chunks, then a
per-channel reduction of those partial sums), so equal inputs give equal bits.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import MAX_GRID_Y, VECTOR_BYTES, Launch, output, require_storage, storage_suffix
from dlgpu.errors import ShapeError

FAMILY = "bias_grad"

PARTIAL_BLOCK = 256  # 8 warps: the kernel's BIAS_GRAD_WARPS
FINISH_BLOCK = 256
# Pass-1 blocks to aim for: a few waves on any current GPU.  A constant (not the SM
# count) so that the summation order, hence the result's bits, is the same on every device.
TARGET_BLOCKS = 2048
# Fewest rows a chunk gets (four per warp), so that the partial buffer stays a small
# fraction of grad_y.
MIN_ROWS_PER_CHUNK = 32


def partial_columns(dtype) -> int:
    """Columns of a pass-1 block: one 16-byte vector per lane (the kernel's bias_grad_columns<T>)."""
    return 32 * VECTOR_BYTES // np.dtype(dtype).itemsize


def plan(shape, dtype=np.float32) -> tuple[int, int, int, int, int]:
    """(rows, row_len, spatial, chunks, rows_per_chunk) for grad_y of ``shape`` and ``dtype``."""
    rows, channels = int(shape[0]), int(shape[1])
    spatial = math.prod(int(d) for d in shape[2:])
    row_len = channels * spatial
    column_blocks = math.ceil(row_len / partial_columns(dtype))
    chunks = max(1, min(math.ceil(TARGET_BLOCKS / column_blocks), math.ceil(rows / MIN_ROWS_PER_CHUNK), MAX_GRID_Y))
    rows_per_chunk = math.ceil(rows / chunks)
    chunks = math.ceil(rows / rows_per_chunk)  # no empty chunk
    return rows, row_len, spatial, chunks, rows_per_chunk


def bias_grad(grad_y, y=None, out=None, *, executor=None):
    """grad_b (C,) in grad_y's dtype from grad_y (N, C) or (N, C, H, W); masked by (y > 0) when y is given."""
    executor = resolve_executor(executor)
    op = "bias_grad"
    if grad_y.ndim not in (2, 4):
        raise ShapeError(f"{op}: grad_y must be (N, C) or (N, C, H, W), got shape {tuple(grad_y.shape)}")
    dtype = np.dtype(grad_y.dtype)
    suffix = storage_suffix(op, dtype)
    require_storage(op, dtype, grad_y=grad_y, y=y)
    if y is not None and tuple(y.shape) != tuple(grad_y.shape):
        raise ShapeError(f"{op}: y has shape {tuple(y.shape)}, grad_y has {tuple(grad_y.shape)}")
    channels = int(grad_y.shape[1])
    out = output(op, executor, out, (channels,), dtype)
    rows, row_len, spatial, chunks, rows_per_chunk = plan(grad_y.shape, dtype)
    assert (chunks - 1) * rows_per_chunk < rows <= chunks * rows_per_chunk
    partial = executor.xp.empty((chunks, row_len), dtype=np.float32)

    grid = (math.ceil(row_len / partial_columns(dtype)), chunks, 1)
    sizes = (np.int64(rows), np.int64(row_len), np.int64(rows_per_chunk))
    if y is None:
        first = Launch(FAMILY, f"bias_grad_partial_{suffix}", grid, (PARTIAL_BLOCK, 1, 1), (grad_y, partial, *sizes))
    else:
        first = Launch(FAMILY, f"bias_grad_relu_partial_{suffix}", grid, (PARTIAL_BLOCK, 1, 1),
                       (grad_y, y, partial, *sizes))
    executor.launch(first)
    executor.launch(
        Launch(
            FAMILY,
            f"bias_grad_finish_{suffix}",
            (channels, 1, 1),
            (FINISH_BLOCK, 1, 1),
            (partial, out, np.int64(chunks), np.int64(row_len), np.int64(spatial)),
        )
    )
    return out
