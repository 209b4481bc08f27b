"""Reference activations and their backward passes, in float64.

Each backward takes the saved forward OUTPUT y (as the layers keep it):
relu' = (y > 0), tanh' = 1 - y^2, sigmoid' = y * (1 - y).
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ShapeError

__all__ = ["relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward"]


def _backward_operands(op: str, grad_y, y):
    grad_y = np.asarray(grad_y, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if grad_y.shape != y.shape:
        raise ShapeError(f"{op}: grad_y {grad_y.shape} and y {y.shape} must have the same shape")
    return grad_y, y


def relu(x) -> np.ndarray:
    """max(x, 0); NaN stays NaN."""
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


def tanh(x) -> np.ndarray:
    return np.tanh(np.asarray(x, dtype=np.float64))


def sigmoid(x) -> np.ndarray:
    """1 / (1 + exp(-x)), written with exp(-|x|) so that no exponential overflows."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu_backward(grad_y, y) -> np.ndarray:
    grad_y, y = _backward_operands("relu_backward", grad_y, y)
    return np.where(y > 0, grad_y, 0.0)


def tanh_backward(grad_y, y) -> np.ndarray:
    grad_y, y = _backward_operands("tanh_backward", grad_y, y)
    return grad_y * (1.0 - y * y)


def sigmoid_backward(grad_y, y) -> np.ndarray:
    grad_y, y = _backward_operands("sigmoid_backward", grad_y, y)
    return grad_y * y * (1.0 - y)
