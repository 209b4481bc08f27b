"""Launchers for kernels/elementwise.cu: relu, tanh, sigmoid and their backward passes, and conversions.

Every activation takes C-contiguous arrays of one shape and one storage dtype
(float32, bfloat16 or float16: any size >= 1, any alignment, views included)
and returns the output array in that dtype; ``out`` may be an input (in
place).  16-bit arrays are computed in float32 and each output is rounded once.
Backward passes take the forward OUTPUT ``y``.  :func:`convert` moves an
array between float32 and a 16-bit dtype, for launchers whose kernels read
float32 operands only.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, MAP_CHUNK, Launch, grid_stride_blocks, output, require_storage, storage_suffix
from dlgpu.errors import DtypeError, ShapeError

FAMILY = "elementwise"


def _launch_map(op: str, kernel: str, inputs: dict, out, executor):
    executor = resolve_executor(executor)
    first = next(iter(inputs.values()))
    dtype = np.dtype(first.dtype)
    require_storage(op, dtype, **inputs)
    for name, array in inputs.items():
        if tuple(array.shape) != tuple(first.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, expected {tuple(first.shape)}")
    out = output(op, executor, out, first.shape, dtype)
    n = int(first.size)
    blocks = grid_stride_blocks(math.ceil(n / MAP_CHUNK), BLOCK, executor)
    executor.launch(
        Launch(FAMILY, f"{kernel}_{storage_suffix(op, dtype)}", (blocks, 1, 1), (BLOCK, 1, 1),
               (*inputs.values(), out, np.int64(n)))
    )
    return out


def relu_forward(x, out=None, *, executor=None):
    """y = max(x, 0) (NaN stays NaN); x any shape; returns y (``out`` if given)."""
    return _launch_map("relu", "relu_forward", {"x": x}, out, executor)


def tanh_forward(x, out=None, *, executor=None):
    """y = tanh(x)."""
    return _launch_map("tanh", "tanh_forward", {"x": x}, out, executor)


def sigmoid_forward(x, out=None, *, executor=None):
    """y = 1 / (1 + exp(-x))."""
    return _launch_map("sigmoid", "sigmoid_forward", {"x": x}, out, executor)


def relu_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y where y > 0, else 0; grad_y and y of one shape and dtype."""
    return _launch_map("relu_backward", "relu_backward", {"grad_y": grad_y, "y": y}, out, executor)


def tanh_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y * (1 - y^2)."""
    return _launch_map("tanh_backward", "tanh_backward", {"grad_y": grad_y, "y": y}, out, executor)


def sigmoid_backward(grad_y, y, out=None, *, executor=None):
    """grad_x = grad_y * y * (1 - y)."""
    return _launch_map("sigmoid_backward", "sigmoid_backward", {"grad_y": grad_y, "y": y}, out, executor)


def convert(x, dtype, out=None, *, executor=None):
    """x as ``dtype``: float32 <-> bfloat16 / float16 (to 16 bits: round to nearest even; to float32:
    exact).  ``x`` itself when it already has ``dtype``."""
    dtype = np.dtype(dtype)
    source = np.dtype(x.dtype)
    if source == dtype:
        return x
    float32 = np.dtype(np.float32)
    if float32 not in (source, dtype):
        raise DtypeError(f"convert: one side must be float32, got {source.name} -> {dtype.name}")
    half = dtype if source == float32 else source
    kernel = (f"convert_f32_to_{storage_suffix('convert', half)}" if source == float32
              else f"convert_{storage_suffix('convert', half)}_to_f32")
    executor = resolve_executor(executor)
    require_storage("convert", source, x=x)
    out = output("convert", executor, out, x.shape, dtype)
    n = int(x.size)
    blocks = grid_stride_blocks(math.ceil(n / MAP_CHUNK), BLOCK, executor)
    executor.launch(Launch(FAMILY, kernel, (blocks, 1, 1), (BLOCK, 1, 1), (x, out, np.int64(n))))
    return out


class ElementwiseOps:
    """The CUDA backend's activations (see dlgpu.backend.Backend)."""

    relu = staticmethod(relu_forward)
    tanh = staticmethod(tanh_forward)
    sigmoid = staticmethod(sigmoid_forward)
    relu_backward = staticmethod(relu_backward)
    tanh_backward = staticmethod(tanh_backward)
    sigmoid_backward = staticmethod(sigmoid_backward)
