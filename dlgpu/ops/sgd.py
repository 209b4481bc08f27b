"""The public SGD step: PyTorch's rule, in place, with optional fp32 master weights.

The op validates its whole call, then calls the backend its arrays select
(kernels/sgd.cu through dlgpu.cuda.sgd, or
numba through dlgpu.cpu.sgd).
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, DtypeError, LayoutError, ShapeError
from dlgpu.backend import select
from dlgpu.ops.validate import (
    check_float,
    check_layout,
    check_scalar,
    check_writeable,
    contiguous,
    public,
    shares_memory,
)
from dlgpu.precision import is_half

__all__ = ["sgd_step"]

_FLOAT32 = np.dtype(np.float32)


@public
def sgd_step(param, grad, velocity, *, lr, momentum=0.0, weight_decay=0.0, master=None, grad_scale=1.0):
    """One SGD step in place, PyTorch's rule (no dampening, no Nesterov).

    g = grad / grad_scale + weight_decay * w; with momentum, velocity = momentum * velocity + g
    and g = velocity; then w -= lr * g.  velocity may be None when momentum is 0.

    Without ``master``, w is ``param`` itself and every array has param's dtype
    (16-bit ones are computed in float32 and rounded once).  With ``master``
    (float32, param's shape: fp32 master weights), param must be float16 or
    bfloat16 (the model's 16-bit copy): w is ``master``, velocity is float32,
    grad has param's dtype, and after the step param is master rounded to its
    dtype -- param's old value is not read.  ``grad_scale`` is the loss scale of
    mixed-precision training: the gradients of a loss multiplied by it are
    unscaled here, in float32, where a small 16-bit gradient cannot underflow.

    Layout: param, velocity and master are updated in place, so they must be
    C-contiguous (LayoutError otherwise); a strided grad is copied once.
    """
    op = "sgd_step"
    lr = check_scalar(op, "lr", lr)
    momentum = check_scalar(op, "momentum", momentum)
    weight_decay = check_scalar(op, "weight_decay", weight_decay)
    grad_scale = check_scalar(op, "grad_scale", grad_scale)
    if grad_scale == 0.0:
        raise ArgumentError(f"{op}: grad_scale must be > 0, got 0.0")
    if momentum != 0.0 and velocity is None:
        raise ArgumentError(f"{op}: momentum={momentum} needs a velocity buffer (zeros like param to start)")
    backend = select(op, param=param, grad=grad, velocity=velocity, master=master)
    if master is None:
        check_float(op, backend, param=param, grad=grad, velocity=velocity)
    else:
        dtype = check_float(op, backend, param=param, grad=grad)
        if not is_half(dtype):
            raise DtypeError(f"{op}: master weights are for a float16 or bfloat16 param, got {dtype.name}")
        for name, array in (("master", master), ("velocity", velocity)):
            if array is not None and np.dtype(array.dtype) != _FLOAT32:
                raise DtypeError(f"{op}: with master weights {name} must be float32, got {np.dtype(array.dtype).name}")
    for name, array in (("grad", grad), ("velocity", velocity), ("master", master)):
        if array is not None and tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, param has {tuple(param.shape)}")
    # updated in place: a copy would drop the update
    check_layout(op, param=param, velocity=velocity, master=master, empty_ok=True)
    if param.size == 0:  # an empty parameter (PyTorch's optimizers take them): nothing to update
        return
    (grad,) = contiguous(op, grad=grad)
    for name, array in (("param", param), ("velocity", velocity), ("master", master)):
        if array is not None:
            check_writeable(op, name, array)
    named = (("param", param), ("velocity", velocity), ("master", master), ("grad", grad))
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1:]:
            if a is not None and b is not None and shares_memory(a, b):
                raise LayoutError(f"{op}: {name_a} overlaps {name_b}; each needs its own buffer")
    backend.sgd_step(param, grad, velocity, lr, momentum, weight_decay, master, grad_scale)
