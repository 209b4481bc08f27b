"""Reference softmax cross-entropy, in float64.

logits (N, C), labels (N,) integers in [0, C):
    loss  = mean_n ( logsumexp(logits[n]) - logits[n, labels[n]] )     (a 0-d array)
    probs = softmax(logits) = exp(logits - logsumexp(logits))
    grad_logits = (probs - onehot(labels)) / N
Subtracting the row maximum before exponentiating keeps every exp() in (0, 1],
so logits of +-1e4 give a finite loss and finite probabilities.
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, DtypeError, ShapeError

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]


def _labels(op: str, labels, N: int, C: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DtypeError(f"{op}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (N,):
        raise ShapeError(f"{op}: labels must have shape ({N},), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= C:
        raise ArgumentError(f"{op}: labels must lie in [0, {C}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def _rows(op: str, name: str, array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ShapeError(f"{op}: {name} must be 2-D (N, C) with N, C >= 1, got shape {array.shape}")
    return array


def softmax_cross_entropy(logits, labels):
    """(mean loss as a 0-d float64 array, softmax probabilities (N, C))."""
    logits = _rows("softmax_cross_entropy", "logits", logits)
    N, C = logits.shape
    labels = _labels("softmax_cross_entropy", labels, N, C)
    row_max = logits.max(axis=1, keepdims=True)
    shifted = logits - row_max
    log_sum_exp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # of the shifted row
    log_probs = shifted - log_sum_exp
    loss = -log_probs[np.arange(N), labels].mean()
    return np.asarray(loss, dtype=np.float64), np.exp(log_probs)


def softmax_cross_entropy_backward(probs, labels) -> np.ndarray:
    """dLoss/dlogits = (probs - onehot(labels)) / N."""
    probs = _rows("softmax_cross_entropy_backward", "probs", probs)
    N, C = probs.shape
    labels = _labels("softmax_cross_entropy_backward", labels, N, C)
    grad = probs.copy()
    grad[np.arange(N), labels] -= 1.0
    return grad / N
