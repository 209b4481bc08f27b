"""Reference SGD step: PyTorch's rule (no dampening, no Nesterov), in float64.

    g = grad + weight_decay * param
    if momentum != 0:  velocity = momentum * velocity + g;  g = velocity
    param -= lr * g
PyTorch starts its momentum buffer at the first g, which is this rule with a
zero velocity, so callers start velocity at zeros.  With fp32 master weights
the rule runs on the master copy, and the 16-bit param receives its value.
"""

from __future__ import annotations

import numpy as np

from dlgpu.errors import ArgumentError, LayoutError, ShapeError

__all__ = ["sgd_step"]


def _writable(name: str, array) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise LayoutError(f"sgd_step: {name} must be a NumPy array updated in place, got {type(array).__name__}")
    if not array.flags.writeable:
        raise LayoutError(f"sgd_step: {name} is read-only; it is updated in place")
    return array


def sgd_step(param, grad, velocity, *, lr, momentum=0.0, weight_decay=0.0, master=None, grad_scale=1.0) -> None:
    """Update ``param`` (and ``velocity`` when momentum != 0) in place; compute in float64.

    With ``master`` the step is taken on master (updated in place) and param is set to
    the result in its own dtype; grad is divided by ``grad_scale`` first.
    """
    _writable("param", param)
    grad = np.asarray(grad)
    if grad.shape != param.shape:
        raise ShapeError(f"sgd_step: grad {grad.shape} must have param's shape {param.shape}")
    weights = param if master is None else _writable("master", master)
    if weights.shape != param.shape:
        raise ShapeError(f"sgd_step: master {weights.shape} must have param's shape {param.shape}")
    p = weights.astype(np.float64)
    g = grad.astype(np.float64) / grad_scale + weight_decay * p
    if momentum != 0:
        if velocity is None:
            raise ArgumentError(f"sgd_step: momentum={momentum} needs a velocity array, got None")
        _writable("velocity", velocity)
        if velocity.shape != param.shape:
            raise ShapeError(f"sgd_step: velocity {velocity.shape} must have param's shape {param.shape}")
        v = momentum * velocity.astype(np.float64) + g
        velocity[...] = v
        g = v
    weights[...] = p - lr * g
    if master is not None:
        param[...] = weights
