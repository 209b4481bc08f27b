"""The public SGD step: PyTorch's rule, in place.

The op validates its whole call, then calls the backend its arrays select
(kernels/sgd.cu through dlgpu.cuda.sgd, or
numba through dlgpu.cpu.sgd).
"""

from __future__ import annotations

from dlgpu.errors import ArgumentError, LayoutError, ShapeError
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

__all__ = ["sgd_step"]




@public
def sgd_step(param, grad, velocity, *, lr, momentum=0.0, weight_decay=0.0):
    """One SGD step in place, PyTorch's rule (no dampening, no Nesterov).

    g = grad + weight_decay * param; with momentum, velocity = momentum * velocity + g
    and g = velocity; then param -= lr * g.  velocity may be None when momentum is 0.
    Layout: param and velocity are updated in place, so they must be
    C-contiguous (LayoutError otherwise); a strided grad is copied once.
    """
    op = "sgd_step"
    lr = check_scalar(op, "lr", lr)
    momentum = check_scalar(op, "momentum", momentum)
    weight_decay = check_scalar(op, "weight_decay", weight_decay)
    if momentum != 0.0 and velocity is None:
        raise ArgumentError(f"{op}: momentum={momentum} needs a velocity buffer (zeros like param to start)")
    backend = select(op, param=param, grad=grad, velocity=velocity)
    check_float(op, backend, param=param, grad=grad, velocity=velocity)
    for name, array in (("grad", grad), ("velocity", velocity)):
        if array is not None and tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, param has {tuple(param.shape)}")
    # updated in place: a copy would drop the update
    check_layout(op, param=param, velocity=velocity, empty_ok=True)
    if param.size == 0:  # an empty parameter (PyTorch's optimizers take them): nothing to update
        return
    (grad,) = contiguous(op, grad=grad)
    check_writeable(op, "param", param)
    if velocity is not None:
        check_writeable(op, "velocity", velocity)
    for name_a, a, name_b, b in (
        ("param", param, "grad", grad),
        ("param", param, "velocity", velocity),
        ("velocity", velocity, "grad", grad),
    ):
        if a is not None and b is not None and shares_memory(a, b):
            raise LayoutError(f"{op}: {name_a} overlaps {name_b}; each needs its own buffer")
    backend.sgd_step(param, grad, velocity, lr, momentum, weight_decay)
