"""Reference 2-D convolution (cross-correlation, like PyTorch), in float64, by im2col.

x (N, C, H, W), weight (K, C / groups, R, S), bias (K,) or None -> y (N, K, P, Q) with
    P = (H + 2*ph - dh*(R-1) - 1) // sh + 1     (Q likewise with w)
    y[n, k, p, q] = bias[k] + sum_{c,r,s} weight[k, c, r, s] * xpad[n, c, p*sh + r*dh, q*sw + s*dw]

The column matrix holds, for every filter tap (c, r, s), the input element that tap
meets at every output position; the convolution is then one matrix product.  Only
the R*S taps are looped over; everything else is vectorized.
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.window import output_size

__all__ = ["conv2d", "conv2d_backward"]


def pair(op: str, name: str, value) -> tuple[int, int]:
    """An int or (h, w) pair as a pair of ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ArgumentError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def _geometry(op, x_shape, w_shape, stride, padding, dilation):
    """Validated (stride, padding, dilation, P, Q) for an input and filter shape."""
    stride = pair(op, "stride", stride)
    padding = pair(op, "padding", padding)
    dilation = pair(op, "dilation", dilation)
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ArgumentError(
            f"{op}: need stride >= 1, dilation >= 1, padding >= 0; got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(f"{op}: x and weight must be 4-D (NCHW, OIHW), got {x_shape} and {w_shape}")
    if x_shape[1] != w_shape[1]:
        raise ShapeError(f"{op}: x has {x_shape[1]} channels but weight {w_shape} expects {w_shape[1]}")
    (_, _, H, W), (_, _, R, S) = x_shape, w_shape
    P = output_size(H, R, stride[0], padding[0], dilation[0])
    Q = output_size(W, S, stride[1], padding[1], dilation[1])
    if P < 1 or Q < 1:
        raise ShapeError(
            f"{op}: filter {R}x{S} with dilation {dilation} does not fit input {H}x{W} padded by {padding}"
        )
    return stride, padding, dilation, P, Q


def _tap_slices(r, s, stride, dilation, P, Q):
    """The rows and columns of the padded input that filter tap (r, s) meets, one per output position."""
    row0, col0 = r * dilation[0], s * dilation[1]
    return (
        slice(row0, row0 + stride[0] * (P - 1) + 1, stride[0]),
        slice(col0, col0 + stride[1] * (Q - 1) + 1, stride[1]),
    )


def im2col(x, R, S, stride, padding, dilation, P, Q) -> np.ndarray:
    """(N, C*R*S, P*Q) columns: cols[n, (c, r, s), (p, q)] = xpad[n, c, p*sh + r*dh, q*sw + s*dw]."""
    N, C, _, _ = x.shape
    ph, pw = padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((N, C, R, S, P, Q), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            rows, columns = _tap_slices(r, s, stride, dilation, P, Q)
            cols[:, :, r, s] = xpad[:, :, rows, columns]
    return cols.reshape(N, C * R * S, P * Q)


def col2im(cols, x_shape, R, S, stride, padding, dilation, P, Q) -> np.ndarray:
    """The adjoint of im2col: add every column entry back onto the input element it was read from."""
    N, C, H, W = x_shape
    ph, pw = padding
    cols = cols.reshape(N, C, R, S, P, Q)
    grad_xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            rows, columns = _tap_slices(r, s, stride, dilation, P, Q)
            # One tap reads each padded element at most once, so a slice-add never collides.
            grad_xpad[:, :, rows, columns] += cols[:, :, r, s]
    return grad_xpad[:, :, ph : ph + H, pw : pw + W]


def _groups(op, groups, x_shape, w_shape) -> int:
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ArgumentError(f"{op}: groups must be a positive int, got {groups!r}")
    if len(x_shape) == 4 and len(w_shape) == 4 and (x_shape[1] % groups or w_shape[0] % groups):
        raise ShapeError(f"{op}: groups={groups} must divide {x_shape[1]} input and {w_shape[0]} output channels")
    return int(groups)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, precision=None):
    """act(conv(x, weight) + bias) in float64; ``precision`` is accepted and ignored.

    With ``groups`` > 1, weight is (K, C / groups, R, S) and output channels
    [g*K/groups, (g+1)*K/groups) see only input channels [g*C/groups, (g+1)*C/groups).
    """
    if activation not in (None, "relu"):
        raise ArgumentError(f"conv2d: activation must be None or 'relu', got {activation!r}")
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    groups = _groups("conv2d", groups, x.shape, weight.shape)
    group_x_shape = x.shape[:1] + (x.shape[1] // groups,) + x.shape[2:] if x.ndim == 4 else x.shape
    stride, padding, dilation, P, Q = _geometry("conv2d", group_x_shape, weight.shape, stride, padding, dilation)
    N = x.shape[0]
    K, C, R, S = weight.shape
    Kg = K // groups
    y = np.empty((N, K, P, Q))
    for g in range(groups):
        cols = im2col(x[:, g * C:(g + 1) * C], R, S, stride, padding, dilation, P, Q)
        y[:, g * Kg:(g + 1) * Kg] = (weight[g * Kg:(g + 1) * Kg].reshape(Kg, C * R * S) @ cols).reshape(N, Kg, P, Q)
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (K,):
            raise ShapeError(f"conv2d: bias must have shape ({K},), got {bias.shape}")
        y = y + bias[None, :, None, None]
    if activation == "relu":
        y = np.maximum(y, 0.0)
    return y


def conv2d_backward(
    grad_y, x, weight, *, y=None, stride=1, padding=0, dilation=1, groups=1, activation=None, precision=None
):
    """(grad_x, grad_w, grad_b) of conv2d; with activation="relu" grad_y is masked by y > 0.

    ``y`` (the forward output) is required with activation="relu": the backward
    pass does not see the bias, so it cannot rebuild the mask itself.
    """
    if activation not in (None, "relu"):
        raise ArgumentError(f"conv2d_backward: activation must be None or 'relu', got {activation!r}")
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    grad_y = np.asarray(grad_y, dtype=np.float64)
    groups = _groups("conv2d_backward", groups, x.shape, weight.shape)
    group_x_shape = x.shape[:1] + (x.shape[1] // groups,) + x.shape[2:] if x.ndim == 4 else x.shape
    stride, padding, dilation, P, Q = _geometry("conv2d_backward", group_x_shape, weight.shape, stride, padding,
                                                dilation)
    N = x.shape[0]
    K, C, R, S = weight.shape
    if grad_y.shape != (N, K, P, Q):
        raise ShapeError(f"conv2d_backward: grad_y must have shape {(N, K, P, Q)}, got {grad_y.shape}")
    if activation == "relu":
        if y is None:
            raise ArgumentError("conv2d_backward: activation='relu' needs y, the forward output, for its mask")
        y = np.asarray(y)
        if y.shape != grad_y.shape:
            raise ShapeError(f"conv2d_backward: y must have shape {grad_y.shape}, got {y.shape}")
        grad_y = np.where(y > 0, grad_y, 0.0)

    Kg = K // groups
    grad_x = np.empty(x.shape)
    grad_w = np.empty(weight.shape)
    for g in range(groups):
        ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * C, (g + 1) * C)
        grad_y_mat = grad_y[:, ks].reshape(N, Kg, P * Q)
        cols = im2col(x[:, cs], R, S, stride, padding, dilation, P, Q)
        # y = W cols for each image, so dE/dW sums G cols^T over images and dE/dcols = W^T G.
        grad_w[ks] = np.tensordot(grad_y_mat, cols, axes=([0, 2], [0, 2])).reshape(Kg, C, R, S)
        grad_cols = weight[ks].reshape(Kg, C * R * S).T @ grad_y_mat  # (N, C*R*S, P*Q)
        grad_x[:, cs] = col2im(grad_cols, (N, C) + x.shape[2:], R, S, stride, padding, dilation, P, Q)
    grad_b = grad_y.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b
