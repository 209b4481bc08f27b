"""Launchers for kernels/elementwise.cu: relu, tanh, sigmoid and their backward passes.

Every function takes float32 C-contiguous arrays of one shape (any size >= 1,
any alignment, views included) and returns the output array; ``out`` may be
an input (in place).  Backward passes take the forward OUTPUT ``y``.

Also home of the grid arithmetic that the other grid-stride launchers share
(:func:`grid_stride_blocks`, :func:`resolve_executor`).
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.launch import Launch
from dlgpu.errors import DtypeError, LayoutError, ShapeError

FAMILY = "elementwise"

# 256 threads: a multiple of 32 that leaves room for 4+ resident blocks per SM at <= 64 registers.
BLOCK = 256
# Blocks per SM for grid-stride kernels: enough threads to keep 16-byte loads in flight
# without a second partial wave of long-running blocks.
BLOCKS_PER_SM = 4
# SMs assumed when the executor has no device to ask (the CPU harness): an H100's count.
FALLBACK_MULTIPROCESSORS = 132

_multiprocessors: dict[int, int] = {}


def resolve_executor(executor):
    """``executor``, or the process-wide CuPy executor when it is None."""
    if executor is not None:
        return executor
    from dlgpu.cuda.executor import default_executor

    return default_executor()


def multiprocessor_count(executor) -> int:
    """SMs of the executor's current device; a constant for executors without one."""
    count = getattr(executor, "multiprocessor_count", None)
    if count is not None:
        return int(count)
    cuda = getattr(executor.xp, "cuda", None)
    if cuda is None:
        return FALLBACK_MULTIPROCESSORS
    device = cuda.runtime.getDevice()
    if device not in _multiprocessors:
        _multiprocessors[device] = int(cuda.Device(device).attributes["MultiProcessorCount"])
    return _multiprocessors[device]


def grid_stride_blocks(work_items: int, block: int, executor, blocks_per_sm: int = BLOCKS_PER_SM) -> int:
    """Blocks for a grid-stride loop over ``work_items``: one item per thread, at most a full device."""
    assert work_items >= 0 and block % 32 == 0, (work_items, block)
    wanted = max(1, math.ceil(work_items / block))
    return min(wanted, blocks_per_sm * multiprocessor_count(executor))


def require_float32(op: str, **arrays) -> None:
    """Launch-level checks (dlgpu.functional has done the full ones): float32, C-contiguous."""
    for name, array in arrays.items():
        if np.dtype(array.dtype) != np.float32:
            raise DtypeError(f"{op}: {name} must be float32 for the CUDA kernels, got {np.dtype(array.dtype).name}")
        if not array.flags.c_contiguous:
            raise LayoutError(f"{op}: {name} must be C-contiguous")


def _prepare_out(op: str, executor, like, out):
    if out is None:
        return executor.xp.empty(like.shape, dtype=np.float32)
    if tuple(out.shape) != tuple(like.shape):
        raise ShapeError(f"{op}: out has shape {tuple(out.shape)}, expected {tuple(like.shape)}")
    require_float32(op, out=out)
    return out


def _launch_map(op: str, kernel: str, inputs: dict, out, executor):
    executor = resolve_executor(executor)
    require_float32(op, **inputs)
    first = next(iter(inputs.values()))
    for name, array in inputs.items():
        if tuple(array.shape) != tuple(first.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, expected {tuple(first.shape)}")
    out = _prepare_out(op, executor, first, out)
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
