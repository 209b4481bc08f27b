"""Launcher for kernels/sgd.cu: one fused, in-place SGD step (PyTorch's rule).

param, grad (and velocity when momentum != 0) are C-contiguous arrays of one
shape and one storage dtype (float32, bfloat16, float16), pairwise disjoint;
param and velocity are updated in place, in float arithmetic.  With
``master`` (float32, param's shape) param must be 16-bit: the step is taken
on master with a float32 velocity, and param receives master rounded to its
dtype.  Gradients are multiplied by 1 / ``grad_scale`` first.
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import BLOCK, MAP_CHUNK, Launch, grid_stride_blocks, require_storage, storage_suffix
from dlgpu.errors import ArgumentError, DtypeError, ShapeError

FAMILY = "sgd"


def sgd_step(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, master=None, grad_scale=1.0, *,
             executor=None) -> None:
    """g = grad / grad_scale + weight_decay*w; with momentum: velocity = momentum*velocity + g, g = velocity;
    w -= lr*g, where w is ``master`` when given (then param = w rounded) and param otherwise.
    velocity may be None when momentum == 0 (it is then left alone)."""
    executor = resolve_executor(executor)
    op = "sgd_step"
    dtype = np.dtype(param.dtype)
    suffix = storage_suffix(op, dtype)
    arrays = {"param": param, "grad": grad}
    if momentum != 0.0 and velocity is None:
        raise ArgumentError(f"{op}: momentum={momentum} needs a velocity array, got None")
    require_storage(op, dtype, **arrays)
    state = {"master": master} if master is not None else {}
    if momentum != 0.0:
        state["velocity"] = velocity
    if master is not None:
        if dtype == np.float32:
            raise DtypeError(f"{op}: master weights are for 16-bit params; param is float32")
        require_storage(op, np.float32, **state)
    else:
        require_storage(op, dtype, **state)
    for name, array in {**arrays, **state}.items():
        if tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, param has {tuple(param.shape)}")
    n = int(param.size)
    blocks = grid_stride_blocks(math.ceil(n / MAP_CHUNK), BLOCK, executor)
    rates = (np.float32(lr), np.float32(momentum), np.float32(weight_decay))
    unscale = np.float32(1.0 / grad_scale)
    size = np.int64(n)
    if master is not None and momentum != 0.0:
        kernel, args = f"sgd_master_momentum_{suffix}", (master, param, grad, velocity, size, *rates, unscale)
    elif master is not None:
        kernel, args = f"sgd_master_plain_{suffix}", (master, param, grad, size, rates[0], rates[2], unscale)
    elif momentum != 0.0:
        kernel, args = f"sgd_momentum_{suffix}", (param, grad, velocity, size, *rates, unscale)
    else:
        kernel, args = f"sgd_plain_{suffix}", (param, grad, size, rates[0], rates[2], unscale)
    executor.launch(Launch(FAMILY, kernel, (blocks, 1, 1), (BLOCK, 1, 1), args))


class SgdOps:
    """The CUDA backend's optimizer step (see dlgpu.backend.Backend)."""

    sgd_step = staticmethod(sgd_step)
