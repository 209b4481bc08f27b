"""Launchers for kernels/elementwise.cu: relu, tanh, sigmoid and their backward passes.

Every function takes float32 C-contiguous arrays of one shape (any size >= 1,
any alignment, views included) and returns the output array; ``out`` may be
an input (in place).  Backward passes take the forward OUTPUT ``y``.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, Launch, grid_stride_blocks, output, require_float32
from dlgpu.errors import ShapeError

FAMILY = "elementwise"


def _launch_map(op: str, kernel: str, inputs: dict, out, executor):
    executor = resolve_executor(executor)
    require_float32(op, **inputs)
    first = next(iter(inputs.values()))
    for name, array in inputs.items():
        if tuple(array.shape) != tuple(first.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, expected {tuple(first.shape)}")
    out = output(op, executor, out, first.shape)
    n = int(first.size)
    # A thread handles about four elements (one float4) per trip of the grid-stride loop.
    blocks = grid_stride_blocks(math.ceil(n / 4), BLOCK, executor)
    executor.launch(
        Launch(FAMILY, kernel, (blocks, 1, 1), (BLOCK, 1, 1), (*inputs.values(), out, np.int64(n)))
    )
    return out


def relu_forward(x, out=None, *, executor=None):
    """y = max(x, 0) (NaN stays NaN); x float32, any shape; returns y (``out`` if given)."""
    return _launch_map("relu", "relu_forward_f32", {"x": x}, out, executor)


def tanh_forward(x, out=None, *, executor=None):
    """y = tanh(x); x float32, any shape."""
    return _launch_map("tanh", "tanh_forward_f32", {"x": x}, out, executor)


def sigmoid_forward(x, out=None, *, executor=None):
    """y = 1 / (1 + exp(-x)); x float32, any shape."""
    return _launch_map("sigmoid", "sigmoid_forward_f32", {"x": x}, out, executor)


def relu_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y where y > 0, else 0; grad_y and y float32 of one shape."""
    return _launch_map("relu_backward", "relu_backward_f32", {"grad_y": grad_y, "y": y}, out, executor)


def tanh_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y * (1 - y^2)."""
    return _launch_map("tanh_backward", "tanh_backward_f32", {"grad_y": grad_y, "y": y}, out, executor)


def sigmoid_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y * y * (1 - y)."""
    return _launch_map("sigmoid_backward", "sigmoid_backward_f32", {"grad_y": grad_y, "y": y}, out, executor)


class ElementwiseOps:
    """The CUDA backend's activations (see dlgpu.backend.Backend)."""

    relu = staticmethod(relu_forward)
    tanh = staticmethod(tanh_forward)
    sigmoid = staticmethod(sigmoid_forward)
    relu_backward = staticmethod(relu_backward)
    tanh_backward = staticmethod(tanh_backward)
    sigmoid_backward = staticmethod(sigmoid_backward)
