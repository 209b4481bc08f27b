"""CPU activations and their backward passes: one parallel numba pass each.

    relu(x, out), tanh(x, out), sigmoid(x, out)                      -> y
    relu_backward(gy, y, out), tanh_backward(...), sigmoid_backward(...) -> grad_x

Backward passes read the saved OUTPUT y: relu' = (y > 0), tanh' = 1 - y^2,
sigmoid' = y * (1 - y).  tanh and sigmoid work in float64 and round once:
1 - y^2 in float32 loses most of its digits as |y| nears 1.  ``out`` may be
the input itself (in place): each element is read before it is written, by
the same iteration.  All arrays arrive C-contiguous, so each kernel walks
them flat.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.threads import SERIAL_ELEMENTS, launch

# Which function a kernel applies; one compiled kernel per direction keeps the
# first-call compile time down (two kernels x two dtypes instead of six x two).
_RELU, _TANH, _SIGMOID = 0, 1, 2


@njit(parallel=True, cache=True)
def _activation(x, y, kind):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        if kind == _RELU:
            y[i] = zero if v < zero else v  # NaN propagates
        elif kind == _TANH:
            y[i] = np.tanh(np.float64(v))
        elif v >= zero:
            y[i] = 1.0 / (1.0 + np.exp(-np.float64(v)))
        else:
            # exp of a negative number only: no overflow for very negative v.
            e = np.exp(np.float64(v))
            y[i] = e / (1.0 + e)


@njit(parallel=True, cache=True)
def _activation_backward(grad_y, y, grad_x, kind):
    zero = y.dtype.type(0)
    for i in prange(y.size):
        v = y[i]
        g = grad_y[i]
        if kind == _RELU:
            grad_x[i] = g if v > zero else zero
        elif kind == _TANH:
            # 1 - y^2 cancels as |y| nears 1: in float32 it would keep only a few digits.
            v64 = np.float64(v)
            grad_x[i] = g * (1.0 - v64 * v64)
        else:
            v64 = np.float64(v)
            grad_x[i] = g * (v64 * (1.0 - v64))


def _forward(x, out, kind):
    y = np.empty_like(x) if out is None else out
    launch(_activation, x.size < SERIAL_ELEMENTS, x.reshape(-1), y.reshape(-1), kind)
    return y


def _backward(grad_y, y, out, kind):
    grad_x = np.empty_like(grad_y) if out is None else out
    launch(_activation_backward, y.size < SERIAL_ELEMENTS, grad_y.reshape(-1), y.reshape(-1), grad_x.reshape(-1), kind)
    return grad_x


def relu(x, out):
    return _forward(x, out, _RELU)


def tanh(x, out):
    return _forward(x, out, _TANH)


def sigmoid(x, out):
    return _forward(x, out, _SIGMOID)


def relu_backward(grad_y, y, out):
    return _backward(grad_y, y, out, _RELU)


def tanh_backward(grad_y, y, out):
    return _backward(grad_y, y, out, _TANH)


def sigmoid_backward(grad_y, y, out):
    return _backward(grad_y, y, out, _SIGMOID)


class ElementwiseOps:
    """The CPU backend's activations (see dlgpu.backend.Backend)."""

    relu = staticmethod(relu)
    tanh = staticmethod(tanh)
    sigmoid = staticmethod(sigmoid)
    relu_backward = staticmethod(relu_backward)
    tanh_backward = staticmethod(tanh_backward)
    sigmoid_backward = staticmethod(sigmoid_backward)
