"""Reference matrix product and fully connected layer, in float64.

matmul:  c = op(a) @ op(b), op = transpose when transpose_a / transpose_b.
linear:  y = act(x @ weight.T + bias), x (B, in), weight (out, in), bias (out,).
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, ShapeError

__all__ = ["matmul", "matmul_backward", "linear", "linear_backward"]


def _as_matrix(op: str, name: str, array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ShapeError(f"{op}: {name} must be 2-D, got shape {array.shape}")
    return array


def _check_activation(op: str, activation) -> None:
    if activation not in (None, "relu"):
        raise ArgumentError(f"{op}: activation must be None or 'relu', got {activation!r}")


def matmul(a, b, *, transpose_a=False, transpose_b=False, precision=None) -> np.ndarray:
    """op(a) @ op(b) in float64; ``precision`` is accepted and ignored."""
    a = _as_matrix("matmul", "a", a)
    b = _as_matrix("matmul", "b", b)
    op_a = a.T if transpose_a else a
    op_b = b.T if transpose_b else b
    if op_a.shape[1] != op_b.shape[0]:
        raise ShapeError(
            f"matmul: inner dimensions differ: op(a) is {op_a.shape}, op(b) is {op_b.shape} "
            f"(transpose_a={transpose_a}, transpose_b={transpose_b})"
        )
    return op_a @ op_b


def matmul_backward(grad_c, a, b, *, transpose_a=False, transpose_b=False, precision=None):
    """(dE/da, dE/db) for c = op(a) @ op(b), given dE/dc; each has its input's shape."""
    a = _as_matrix("matmul_backward", "a", a)
    b = _as_matrix("matmul_backward", "b", b)
    grad_c = _as_matrix("matmul_backward", "grad_c", grad_c)
    op_a = a.T if transpose_a else a
    op_b = b.T if transpose_b else b
    if op_a.shape[1] != op_b.shape[0] or grad_c.shape != (op_a.shape[0], op_b.shape[1]):
        raise ShapeError(
            f"matmul_backward: grad_c {grad_c.shape} does not match op(a) {op_a.shape} @ op(b) {op_b.shape}"
        )
    # With A = op(a), B = op(b): dE/dA = G B^T and dE/dB = A^T G; transposing back gives a's own layout.
    grad_op_a = grad_c @ op_b.T
    grad_op_b = op_a.T @ grad_c
    grad_a = grad_op_a.T if transpose_a else grad_op_a
    grad_b = grad_op_b.T if transpose_b else grad_op_b
    return np.ascontiguousarray(grad_a), np.ascontiguousarray(grad_b)


def _linear_operands(op: str, x, weight, bias):
    x = _as_matrix(op, "x", x)
    weight = _as_matrix(op, "weight", weight)
    if x.shape[1] != weight.shape[1]:
        raise ShapeError(f"{op}: x has {x.shape[1]} features but weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (weight.shape[0],):
            raise ShapeError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return x, weight, bias


def linear(x, weight, bias=None, *, activation=None, precision=None) -> np.ndarray:
    """act(x @ weight.T + bias) in float64; activation is None or "relu"."""
    _check_activation("linear", activation)
    x, weight, bias = _linear_operands("linear", x, weight, bias)
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    if activation == "relu":
        y = np.maximum(y, 0.0)
    return y


def linear_backward(grad_y, x, weight, *, y=None, activation=None, precision=None):
    """(grad_x, grad_w, grad_b) of linear; with activation="relu" grad_y is masked by y > 0.

    ``y`` is the forward output.  It is required with activation="relu": the
    backward pass does not see the bias, so it cannot rebuild the mask itself.
    grad_b (the sum of grad_y over the batch) is always returned.
    """
    _check_activation("linear_backward", activation)
    x, weight, _ = _linear_operands("linear_backward", x, weight, None)
    grad_y = _as_matrix("linear_backward", "grad_y", grad_y)
    if grad_y.shape != (x.shape[0], weight.shape[0]):
        raise ShapeError(
            f"linear_backward: grad_y must have shape {(x.shape[0], weight.shape[0])}, got {grad_y.shape}"
        )
    if activation == "relu":
        if y is None:
            raise ArgumentError("linear_backward: activation='relu' needs y, the forward output, for its mask")
        y = np.asarray(y)
        if y.shape != grad_y.shape:
            raise ShapeError(f"linear_backward: y must have shape {grad_y.shape}, got {y.shape}")
        grad_y = np.where(y > 0, grad_y, 0.0)
    grad_x = grad_y @ weight
    grad_w = grad_y.T @ x
    grad_b = grad_y.sum(axis=0)
    return grad_x, grad_w, grad_b
