"""Stochastic gradient descent, loss scaling for float16, and two learning-rate schedules.

``SGD.step()`` applies ``dlgpu.functional.sgd_step`` to each parameter in
place (PyTorch's rule: no dampening, no Nesterov), so it runs on the
parameters' backend.  With momentum, each parameter gets a velocity buffer,
allocated on first use like the parameter's data.

Mixed precision: a float16 or bfloat16 parameter (the model's 16-bit copy)
gets float32 master weights, made from it at the first step, and a float32
velocity; each step updates the master copy and rounds it into the
parameter (``master_weights=False``: the 16-bit parameter is the only
copy).  :class:`GradScaler` is dynamic loss scaling for float16, as
PyTorch's ``torch.amp.GradScaler``: the backward pass starts from the loss
gradient times the scale, a step whose gradients hold inf or NaN is
skipped and the scale backed off, and the scale grows after a run of good
steps.  The unscaling happens inside ``sgd_step``, in float32.

A schedule sets the optimizer's ``lr`` from the base learning rate (the
optimizer's lr when the schedule is made) and how many times its ``step()``
has been called: once per epoch or once per SGD step, as the caller chooses.

>>> import numpy as np
>>> from dlgpu.nn import Parameter
>>> p = Parameter(np.array([1.0, -2.0]))
>>> p.grad[:] = [0.5, 0.25]
>>> opt = SGD([p], lr=0.1)
>>> opt.step()
>>> p.data
array([ 0.95 , -2.025])
"""

from __future__ import annotations

import math
import numbers

import numpy as np

import dlgpu.functional as F
from dlgpu.errors import ArgumentError
from dlgpu.nn.module import Parameter, device_of, move, zeros_like
from dlgpu.precision import is_half

__all__ = ["SGD", "GradScaler", "StepLR", "CosineLR"]


def _real(op: str, name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{op}: {name} must be a finite number >= {minimum}, got {value!r}")
    return float(value)


def _count(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


class SGD:
    """param -= lr * g, g = grad + weight_decay * param, through a momentum velocity when momentum != 0.

    16-bit parameters step on float32 master weights unless ``master_weights=False`` (module docstring).
    The master copy is made from the parameter at its first step and is the weights from then on:
    after writing new values into a parameter, make a new optimizer.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, *, master_weights=True):
        op = "SGD"
        self.params = list(params)
        if not self.params:
            raise ArgumentError(f"{op}: params is empty; pass model.parameters()")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise ArgumentError(f"{op}: params[{i}] is a {type(p).__name__}, not a dlgpu.nn.Parameter")
        self.lr = lr
        self.momentum = _real(op, "momentum", momentum)
        self.weight_decay = _real(op, "weight_decay", weight_decay)
        self.master_weights = bool(master_weights)
        # One velocity (and, for 16-bit parameters, one master copy) per parameter, made on first use.
        self.velocities = [None] * len(self.params)
        self.masters = [None] * len(self.params)

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _real("SGD", "lr", value)

    def _master(self, i: int):
        """Parameter i's float32 master weights, or None when it is its own only copy."""
        data = self.params[i].data
        if not (self.master_weights and is_half(data.dtype)):
            return None
        master = self.masters[i]
        if master is None:
            master = data.astype(np.float32)
        elif device_of(master) != device_of(data):
            master = move(master, device_of(data), op="SGD.step")
        self.masters[i] = master
        return master

    def _velocity(self, i: int, like):
        if self.momentum == 0.0:
            return None
        velocity = self.velocities[i]
        if velocity is None:
            velocity = zeros_like(like)
        elif device_of(velocity) != device_of(like):
            # The module was moved with .to() after training started: keep the momentum.
            velocity = move(velocity, device_of(like), op="SGD.step")
        self.velocities[i] = velocity
        return velocity

    def step(self, grad_scale: float = 1.0) -> None:
        """One step of every parameter; ``grad_scale``: the loss scale the gradients carry (divided out)."""
        for i, p in enumerate(self.params):
            master = self._master(i)
            F.sgd_step(
                p.data, p.grad, self._velocity(i, p.data if master is None else master), lr=self._lr,
                momentum=self.momentum, weight_decay=self.weight_decay, master=master, grad_scale=grad_scale,
            )

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def __repr__(self) -> str:
        return (
            f"SGD({len(self.params)} parameters, lr={self._lr:g}, momentum={self.momentum:g}, "
            f"weight_decay={self.weight_decay:g})"
        )


class GradScaler:
    """Dynamic loss scaling for float16 training, PyTorch's GradScaler rule.

    ``scale(grad)`` multiplies the gradient that starts the backward pass (``loss_fn.backward()``) by
    the scale, in float32, rounded back to its dtype (an overflow is an inf, caught below).
    ``step(optimizer)`` runs ``optimizer.step(grad_scale=scale)`` unless a gradient holds inf or NaN
    (one read on the host), and returns whether it stepped.  ``update()`` then halves the scale
    (``backoff_factor``) after a skipped step, or doubles it (``growth_factor``) after
    ``growth_interval`` steps in a row without one.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        op = "GradScaler"
        self._scale = _real(op, "init_scale", init_scale)
        if self._scale == 0.0:
            raise ArgumentError(f"{op}: init_scale must be > 0, got {init_scale!r}")
        self.growth_factor = _real(op, "growth_factor", growth_factor, minimum=1.0)
        self.backoff_factor = _real(op, "backoff_factor", backoff_factor)
        if not 0.0 < self.backoff_factor < 1.0:
            raise ArgumentError(f"{op}: backoff_factor must lie in (0, 1), got {backoff_factor!r}")
        self.growth_interval = _count(op, "growth_interval", growth_interval)
        self._good_steps = 0
        self._found_inf: bool | None = None  # the last step's verdict, for update()
        self.skipped_steps = 0

    def get_scale(self) -> float:
        return self._scale

    def scale(self, grad):
        with np.errstate(over="ignore"):  # an overflow to inf is expected now and then: step() skips it
            return (grad.astype(np.float32) * np.float32(self._scale)).astype(grad.dtype)

    def step(self, optimizer: SGD) -> bool:
        finite = None
        for p in optimizer.params:
            # bfloat16 widened first: not every array library's ufuncs know the dtype.
            grad = p.grad if p.grad.dtype.kind == "f" else p.grad.astype(np.float32)
            ok = _array_module(grad).isfinite(grad).all()
            finite = ok if finite is None else finite & ok
        self._found_inf = not bool(finite)  # the one host read
        if self._found_inf:
            self.skipped_steps += 1
            return False
        optimizer.step(grad_scale=self._scale)
        return True

    def update(self) -> None:
        if self._found_inf is None:
            raise ArgumentError("GradScaler.update: call step(optimizer) first")
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps == self.growth_interval:
                self._scale *= self.growth_factor
                self._good_steps = 0
        self._found_inf = None


def _array_module(array):
    if device_of(array) == "cuda":
        import cupy

        return cupy
    return np


class _Schedule:
    def __init__(self, optimizer: SGD):
        if not isinstance(optimizer, SGD):
            name = type(self).__name__
            raise ArgumentError(f"{name}: optimizer must be a dlgpu.optim.SGD, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.steps = 0

    def lr_at(self, steps: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        """Advance one step, set the optimizer's lr, and return it."""
        self.steps += 1
        self.optimizer.lr = self.lr_at(self.steps)
        return self.optimizer.lr


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (steps // step_size)."""

    def __init__(self, optimizer: SGD, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _count("StepLR", "step_size", step_size)
        self.gamma = _real("StepLR", "gamma", gamma)

    def lr_at(self, steps: int) -> float:
        return self.base_lr * self.gamma ** (steps // self.step_size)

    def __repr__(self) -> str:
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma:g}, base_lr={self.base_lr:g}, steps={self.steps})"


class CosineLR(_Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * steps / total_steps)) / 2, then min_lr after total_steps."""

    def __init__(self, optimizer: SGD, total_steps, min_lr=0.0):
        super().__init__(optimizer)
        self.total_steps = _count("CosineLR", "total_steps", total_steps)
        self.min_lr = _real("CosineLR", "min_lr", min_lr)
        if self.min_lr > self.base_lr:
            raise ArgumentError(f"CosineLR: min_lr {self.min_lr:g} exceeds the optimizer's lr {self.base_lr:g}")

    def lr_at(self, steps: int) -> float:
        progress = min(steps, self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return (
            f"CosineLR(total_steps={self.total_steps}, min_lr={self.min_lr:g}, base_lr={self.base_lr:g}, "
            f"steps={self.steps})"
        )
