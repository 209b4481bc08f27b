"""CPU SGD step, in place, with PyTorch's rule (no dampening, no Nesterov).

    sgd_step(param, grad, velocity, lr, momentum, weight_decay) -> None

    g = grad + weight_decay * param
    if momentum != 0: velocity = momentum * velocity + g; g = velocity
    param -= lr * g

One flat parallel pass reads param, grad (and velocity) once and writes
param (and velocity) once.  Arithmetic is in float64, stored in the
parameter's dtype.
"""

from __future__ import annotations

from numba import njit, prange

from dlgpu.cpu.threads import SERIAL_ELEMENTS, launch


@njit(parallel=True, cache=True)
def _sgd_momentum(param, grad, velocity, lr, momentum, weight_decay):
    for i in prange(param.size):
        g = grad[i] + weight_decay * param[i]
        v = momentum * velocity[i] + g
        velocity[i] = v
        param[i] = param[i] - lr * v


@njit(parallel=True, cache=True)
def _sgd_plain(param, grad, lr, weight_decay):
    for i in prange(param.size):
        param[i] = param[i] - lr * (grad[i] + weight_decay * param[i])


def sgd_step(param, grad, velocity, lr, momentum, weight_decay):
    lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)
    serial = param.size < SERIAL_ELEMENTS
    if momentum != 0.0:
        flat = (param.reshape(-1), grad.reshape(-1), velocity.reshape(-1))
        launch(_sgd_momentum, serial, *flat, lr, momentum, weight_decay)
    else:
        launch(_sgd_plain, serial, param.reshape(-1), grad.reshape(-1), lr, weight_decay)


class SgdOps:
    """The CPU backend's optimizer step (see dlgpu.backend.Backend)."""

    sgd_step = staticmethod(sgd_step)
