"""CPU squared error: the loss and its gradient, with NumPy.

    mse_loss(y, t)          -> 0-d: the mean over rows of 0.5 * sum((y - t)^2) over each row
    mse_loss_backward(y, t) -> (y - t) / rows

Both compute in float64 and round once to the inputs' dtype.  NumPy's pairwise
summation adds in an order fixed by the shape, so the loss is the same bits
every call; there is no loop here that numba would make faster.
"""

from __future__ import annotations

import numpy as np


def mse_loss(y, t):
    d = y.astype(np.float64) - t
    return np.array(0.5 * np.sum(d * d) / y.shape[0], dtype=y.dtype)


def mse_loss_backward(y, t):
    return ((y.astype(np.float64) - t) / y.shape[0]).astype(y.dtype)


class MseOps:
    """The CPU backend's squared error (see dlgpu.backend.Backend)."""

    mse_loss = staticmethod(mse_loss)
    mse_loss_backward = staticmethod(mse_loss_backward)
