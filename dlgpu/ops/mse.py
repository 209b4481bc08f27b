"""The public squared error of the review's Figure 1, and its gradient.

Each op validates its whole call, then calls the backend its arrays select
(kernels/mse.cu through dlgpu.cuda.mse, or NumPy through dlgpu.cpu.mse).

Definition: for outputs y and targets t of one shape (N, ...), each of the N
rows one example,

    loss = (1/N) * sum_n sum_i 0.5 * (y[n, i] - t[n, i])^2,    dloss/dy = (y - t) / N.

Why this one: Figure 1 gives each output's error as 0.5 * (y - t)^2, whose
derivative is y - t, and sums it over the outputs; the mean over the batch
(not the sum) keeps the gradient, and so the learning rate, independent of
the batch size, as the mean cross-entropy does.  PyTorch's ``MSELoss`` is
instead the mean over every element of (y - t)^2, without the 0.5:
dlgpu.torch's ``mse_loss`` converts.
"""

from __future__ import annotations

import numpy as np

from dlgpu.backend import select
from dlgpu.errors import ShapeError
from dlgpu.ops.validate import check_float, check_nonempty, contiguous, public, zeros_result
from dlgpu.precision import loss_dtype

__all__ = ["mse_loss", "mse_loss_backward"]


def _checked(op: str, y, t):
    backend = select(op, y=y, t=t)
    check_float(op, backend, y=y, t=t)
    if y.ndim < 1:
        raise ShapeError(f"{op}: y must have a batch dimension (N, ...), got shape {tuple(y.shape)}")
    if tuple(t.shape) != tuple(y.shape):
        raise ShapeError(f"{op}: t has shape {tuple(t.shape)} but y has {tuple(y.shape)}; nothing is broadcast")
    check_nonempty(op, "y", y, batch_ok=True)
    return backend


@public
def mse_loss(y, t):
    """Figure 1's squared error, 0.5 * (y - t)^2 summed over each row and averaged over the N rows.

    y and t share one floating dtype and one shape (N, ...); returns a 0-d array
    of that dtype (float32 for float16 / bfloat16 inputs).  An empty batch gives
    NaN (the mean of nothing, as PyTorch).
    Layout: strided inputs are copied once.
    """
    op = "mse_loss"
    backend = _checked(op, y, t)
    if y.shape[0] == 0:
        loss = zeros_result(y, (), loss_dtype(y.dtype))
        loss.fill(np.nan)
        return loss
    y, t = contiguous(op, y=y, t=t)
    return backend.mse_loss(y, t)


@public
def mse_loss_backward(y, t):
    """The gradient of :func:`mse_loss` with respect to y: (y - t) / N, shaped like y, in y's dtype.

    Layout: strided inputs are copied once.
    """
    op = "mse_loss_backward"
    backend = _checked(op, y, t)
    if y.shape[0] == 0:
        return zeros_result(y, y.shape, y.dtype)
    y, t = contiguous(op, y=y, t=t)
    return backend.mse_loss_backward(y, t)
