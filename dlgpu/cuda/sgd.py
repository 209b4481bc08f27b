"""Launcher for kernels/sgd.cu: one fused, in-place SGD step (PyTorch's rule).

param, grad (and velocity when momentum != 0) are float32 C-contiguous arrays
of one shape, pairwise disjoint; param and velocity are updated in place.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, Launch, grid_stride_blocks, require_float32
from dlgpu.errors import ArgumentError, ShapeError

FAMILY = "sgd"


def sgd_step(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, *, executor=None) -> None:
    """g = grad + weight_decay*param; with momentum: velocity = momentum*velocity + g, g = velocity;
    param -= lr*g.  velocity may be None when momentum == 0 (it is then left alone)."""
    executor = resolve_executor(executor)
    arrays = {"param": param, "grad": grad}
    if momentum != 0.0:
        if velocity is None:
            raise ArgumentError(f"sgd_step: momentum={momentum} needs a velocity array, got None")
        arrays["velocity"] = velocity
    require_float32("sgd_step", **arrays)
    for name, array in arrays.items():
        if tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"sgd_step: {name} has shape {tuple(array.shape)}, param has {tuple(param.shape)}")
    n = int(param.size)
    blocks = grid_stride_blocks(math.ceil(n / 4), BLOCK, executor)
    if momentum != 0.0:
        kernel = "sgd_momentum_f32"
        args = (param, grad, velocity, np.int64(n), np.float32(lr), np.float32(momentum), np.float32(weight_decay))
    else:
        kernel = "sgd_plain_f32"
        args = (param, grad, np.int64(n), np.float32(lr), np.float32(weight_decay))
    executor.launch(Launch(FAMILY, kernel, (blocks, 1, 1), (BLOCK, 1, 1), args))


class SgdOps:
    """The CUDA backend's optimizer step (see dlgpu.backend.Backend)."""

    sgd_step = staticmethod(sgd_step)
