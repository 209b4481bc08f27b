"""Reference squared error (the review's Figure 1), in float64.

y, t of one shape (N, ...), N >= 1 rows (examples), each row one example's outputs:
    loss = (1/N) * sum_n sum_i 0.5 * (y[n, i] - t[n, i])^2      (a 0-d array)
    grad = dloss/dy = (y - t) / N
The 0.5 makes the derivative of one output's error exactly y - t, as Figure 1
writes it; summing over a row's outputs is Figure 1's E; the mean over rows
keeps the gradient's size independent of the batch size, as the mean
cross-entropy does.
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ShapeError

__all__ = ["mse_loss", "mse_loss_backward"]


def _pair(op: str, y, t) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if y.ndim < 1 or y.shape != t.shape or y.shape[0] < 1:
        raise ShapeError(f"{op}: y {y.shape} and t {t.shape} must be one shape (N, ...) with N >= 1")
    return y, t


def mse_loss(y, t) -> np.ndarray:
    """0.5 * sum((y - t)^2) / N as a 0-d float64 array."""
    y, t = _pair("mse_loss", y, t)
    return np.asarray(0.5 * np.sum((y - t) ** 2) / y.shape[0])


def mse_loss_backward(y, t) -> np.ndarray:
    """dloss/dy = (y - t) / N."""
    y, t = _pair("mse_loss_backward", y, t)
    return (y - t) / y.shape[0]
