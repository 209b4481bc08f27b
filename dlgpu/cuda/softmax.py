"""Launchers for kernels/softmax.cu: softmax cross-entropy forward and backward.

logits/probs: (N, C) C-contiguous float32, bfloat16 or float16 (probabilities and
gradients in that dtype, computed in float32); the loss is float32 whatever it is.
labels: (N,) int32 or int64, C-contiguous.  Labels must lie in [0, C).  Nothing here
reads them back to check: a kernel given one outside never reads out of bounds,
answers NaN for that row, and reports the label in the device error flag
(dlgpu.cuda.error_flag), which dlgpu.check_errors reads.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda import error_flag
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import Launch, require_storage, storage_suffix
from dlgpu.errors import DtypeError, ShapeError

FAMILY = "softmax"

# Warp-per-row kernels hold V values per lane; V is one of these, so rows up to
# 32 * 32 = 1024 classes live in registers.  Wider rows take a block each.
WARP_VALUES = (1, 2, 4, 8, 16, 32)
WARP_ROWS_PER_BLOCK = 4  # 128 threads: small blocks balance well across SMs
ROW_BLOCK_NARROW = 256  # block-per-row threads below WIDE_ROW classes
ROW_BLOCK_WIDE = 512
WIDE_ROW = 8192
MEAN_BLOCK = 1024
BACKWARD_ROWS_PER_BLOCK = 8  # 256 threads, one warp per row
MAX_GRID_X = 2**31 - 1


def _label_suffix(op: str, labels) -> str:
    dtype = np.dtype(labels.dtype)
    if dtype == np.int32:
        return "i32"
    if dtype == np.int64:
        return "i64"
    raise DtypeError(f"{op}: labels must be int32 or int64, got {dtype.name}")


def _check(op: str, rows_array, labels) -> tuple[int, int, str]:
    """(rows, classes, kernel-name suffix: storage type and label type)."""
    dtype = np.dtype(rows_array.dtype)
    require_storage(op, dtype, **{"logits" if op == "softmax_cross_entropy" else "probs": rows_array})
    if rows_array.ndim != 2:
        raise ShapeError(f"{op}: expected a 2-D (N, C) array, got shape {tuple(rows_array.shape)}")
    rows, classes = (int(d) for d in rows_array.shape)
    if tuple(labels.shape) != (rows,):
        raise ShapeError(f"{op}: labels has shape {tuple(labels.shape)}, expected ({rows},)")
    suffix = f"{storage_suffix(op, dtype)}_{_label_suffix(op, labels)}"
    assert labels.flags.c_contiguous, f"{op}: labels must be C-contiguous"
    return rows, classes, suffix


def forward_plan(classes: int) -> tuple[str, int]:
    """(kernel stem, threads per block) for rows of ``classes``."""
    for values in WARP_VALUES:
        if classes <= 32 * values:
            return f"softmax_xent_forward_warp{values}", 32 * WARP_ROWS_PER_BLOCK
    return "softmax_xent_forward_block", ROW_BLOCK_WIDE if classes >= WIDE_ROW else ROW_BLOCK_NARROW


def softmax_cross_entropy(logits, labels, *, executor=None):
    """(loss, probs): loss a 0-d float32 array, the mean over rows of logsumexp - logit[label];
    probs (N, C) = softmax(logits) in the logits' dtype."""
    op = "softmax_cross_entropy"
    executor = resolve_executor(executor)
    rows, classes, suffix = _check(op, logits, labels)
    xp = executor.xp
    probs = xp.empty((rows, classes), dtype=logits.dtype)
    row_loss = xp.empty((rows,), dtype=np.float32)
    loss = xp.empty((), dtype=np.float32)

    stem, block = forward_plan(classes)
    rows_per_block = block // 32 if stem != "softmax_xent_forward_block" else 1
    grid = min(math.ceil(rows / rows_per_block), MAX_GRID_X)
    executor.launch(
        Launch(
            FAMILY,
            f"{stem}_{suffix}",
            (grid, 1, 1),
            (block, 1, 1),
            (logits, labels, probs, row_loss, np.int64(rows), np.int32(classes), error_flag.flag(executor)),
        )
    )
    executor.launch(
        Launch(FAMILY, "softmax_xent_mean_f32", (1, 1, 1), (MEAN_BLOCK, 1, 1), (row_loss, loss, np.int64(rows)))
    )
    return loss, probs


def softmax_cross_entropy_backward(probs, labels, *, executor=None):
    """grad_logits (N, C) = (probs - onehot(labels)) / N, in the probabilities' dtype."""
    op = "softmax_cross_entropy_backward"
    executor = resolve_executor(executor)
    rows, classes, suffix = _check(op, probs, labels)
    grad = executor.xp.empty((rows, classes), dtype=probs.dtype)
    block = 32 * BACKWARD_ROWS_PER_BLOCK
    grid = min(math.ceil(rows / BACKWARD_ROWS_PER_BLOCK), MAX_GRID_X)
    executor.launch(
        Launch(
            FAMILY,
            f"softmax_xent_backward_{suffix}",
            (grid, 1, 1),
            (block, 1, 1),
            (probs, labels, grad, np.int64(rows), np.int32(classes), np.float32(1.0 / rows),
             error_flag.flag(executor)),
        )
    )
    return grad


class SoftmaxOps:
    """The CUDA backend's loss (see dlgpu.backend.Backend)."""

    softmax_cross_entropy = staticmethod(softmax_cross_entropy)
    softmax_cross_entropy_backward = staticmethod(softmax_cross_entropy_backward)
