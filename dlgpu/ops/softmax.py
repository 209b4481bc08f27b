"""The public softmax cross-entropy loss, and its gradient with respect to the logits.

Each op validates its whole call, then calls the backend its arrays select
(kernels/softmax.cu through
dlgpu.cuda.softmax, or numba through dlgpu.cpu.softmax).
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ShapeError
from dlgpu.backend import select
from dlgpu.ops.validate import (check_float, check_index_dtype, check_index_range, check_ndim, check_nonempty,
                                contiguous, index_check, public, zeros_result)
from dlgpu.precision import loss_dtype

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]

# Labels in [0, classes): checked on the host by the CPU backend (and in debug mode), else by the kernels.
LABELS = {
    op: index_check(op, "label {value} is outside [0, {limit})", "row", "softmax", code)
    for op, code in (("softmax_cross_entropy", "DLGPU_ERROR_SOFTMAX_LABEL"),
                     ("softmax_cross_entropy_backward", "DLGPU_ERROR_SOFTMAX_BACKWARD_LABEL"))
}


def _rows_and_labels(op: str, name: str, rows, labels):
    """(backend, rows, labels) for (N, C) float ``rows`` and their (N,) int32/int64 labels, all checked."""
    backend = select(op, **{name: rows}, labels=labels)
    check_float(op, backend, **{name: rows})
    check_ndim(op, name, rows, 2, "(N, classes)")
    check_index_dtype(op, "labels", labels, (np.int32, np.int64), "int32 or int64 class indices")
    check_ndim(op, "labels", labels, 1, "(N,)")
    if labels.shape[0] != rows.shape[0]:
        raise ShapeError(f"{op}: labels has {labels.shape[0]} entries for {rows.shape[0]} rows")
    check_nonempty(op, name, rows, batch_ok=True)
    if rows.shape[0] == 0:  # an empty batch: the caller makes the empty results
        return backend, rows, labels
    rows, labels = contiguous(op, **{name: rows}, labels=labels)
    check_index_range(LABELS[op], backend, labels, rows.shape[1])
    return backend, rows, labels


@public
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels: returns (loss, probs).

    logits (N, C); labels (N,) int32/int64 in [0, C).  loss is a 0-d array of
    the logits' dtype (float32 for float16 / bfloat16 logits, whose probs stay
    16-bit); probs is softmax(logits).  Stable for logits of any size.
    An empty batch (N = 0) gives a NaN loss (the mean of nothing, as in PyTorch).
    Layout: strided inputs are copied once.
    """
    backend, logits, labels = _rows_and_labels("softmax_cross_entropy", "logits", logits, labels)
    if logits.shape[0] == 0:  # the mean over no rows is NaN, as in PyTorch
        loss = zeros_result(logits, (), loss_dtype(logits.dtype))
        loss.fill(np.nan)
        return loss, zeros_result(logits, logits.shape, logits.dtype)
    return backend.softmax_cross_entropy(logits, labels)


@public
def softmax_cross_entropy_backward(probs, labels):
    """Gradient of the mean loss with respect to the logits: (probs - onehot(labels)) / N.

    Layout: strided inputs are copied once.
    """
    backend, probs, labels = _rows_and_labels("softmax_cross_entropy_backward", "probs", probs, labels)
    if probs.shape[0] == 0:
        return zeros_result(probs, probs.shape, probs.dtype)
    return backend.softmax_cross_entropy_backward(probs, labels)
