"""CPU softmax cross-entropy: forward (mean loss, probabilities) and backward.

    softmax_cross_entropy(logits (N, C), labels (N,))  -> (loss 0-d, probs (N, C))
    softmax_cross_entropy_backward(probs, labels)      -> (probs - onehot(labels)) / N

One row per parallel iteration.  Each row subtracts its maximum before
exponentiating (stable for logits of +-1e4) and works in float64 whatever
the input dtype; per-row losses are kept and summed afterwards in row order,
so the loss is the same bits every call.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.threads import SERIAL_ELEMENTS, launch


@njit(parallel=True, cache=True)
def _softmax_rows(logits, labels, probs, row_loss):
    rows, classes = logits.shape
    for i in prange(rows):
        row = logits[i]
        top = np.float64(row[0])
        for j in range(1, classes):
            v = np.float64(row[j])
            if v > top or v != v:
                top = v
        total = 0.0
        for j in range(classes):
            total += np.exp(np.float64(row[j]) - top)
        for j in range(classes):
            probs[i, j] = np.exp(np.float64(row[j]) - top) / total
        row_loss[i] = np.log(total) + top - np.float64(row[labels[i]])


@njit(parallel=True, cache=True)
def _softmax_backward_rows(probs, labels, grad):
    rows, classes = probs.shape
    scale = 1.0 / rows
    for i in prange(rows):
        for j in range(classes):
            grad[i, j] = probs[i, j] * scale
        grad[i, labels[i]] = (np.float64(probs[i, labels[i]]) - 1.0) * scale


def softmax_cross_entropy(logits, labels):
    probs = np.empty_like(logits)
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    # One label type for the kernels: half the compilations, for the cost of N integers.
    launch(_softmax_rows, logits.size < SERIAL_ELEMENTS, logits, labels.astype(np.int64, copy=False), probs, row_loss)
    loss = np.array(row_loss.sum() / logits.shape[0], dtype=logits.dtype)
    return loss, probs


def softmax_cross_entropy_backward(probs, labels):
    grad = np.empty_like(probs)
    launch(_softmax_backward_rows, probs.size < SERIAL_ELEMENTS, probs, labels.astype(np.int64, copy=False), grad)
    return grad


class SoftmaxOps:
    """The CPU backend's loss (see dlgpu.backend.Backend)."""

    softmax_cross_entropy = staticmethod(softmax_cross_entropy)
    softmax_cross_entropy_backward = staticmethod(softmax_cross_entropy_backward)
