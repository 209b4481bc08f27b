"""Stochastic gradient descent and two learning-rate schedules.

``SGD.step()`` applies ``dlgpu.functional.sgd_step`` to each parameter in
place (PyTorch's rule: no dampening, no Nesterov), so it runs on the
parameters' backend.  With momentum, each parameter gets a velocity buffer,
allocated on first use like the parameter's data.

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

import dlgpu.functional as F
from dlgpu.errors import ArgumentError
from dlgpu.nn.module import Parameter, device_of, move, zeros_like

__all__ = ["SGD", "StepLR", "CosineLR"]


def _real(op: str, name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{op}: {name} must be a finite number >= {minimum}, got {value!r}")
    return float(value)


def _count(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


class SGD:
    """param -= lr * g, g = grad + weight_decay * param, through a momentum velocity when momentum != 0."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
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
        # One velocity per parameter, allocated on the first step that needs it.
        self.velocities = [None] * len(self.params)

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _real("SGD", "lr", value)

    def _velocity(self, i: int):
        if self.momentum == 0.0:
            return None
        data, velocity = self.params[i].data, self.velocities[i]
        if velocity is None:
            velocity = zeros_like(data)
        elif device_of(velocity) != device_of(data):
            # The module was moved with .to() after training started: keep the momentum.
            velocity = move(velocity, device_of(data), op="SGD.step")
        self.velocities[i] = velocity
        return velocity

    def step(self) -> None:
        for i, p in enumerate(self.params):
            F.sgd_step(
                p.data, p.grad, self._velocity(i), lr=self._lr, momentum=self.momentum, weight_decay=self.weight_decay
            )

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def __repr__(self) -> str:
        return (
            f"SGD({len(self.params)} parameters, lr={self._lr:g}, momentum={self.momentum:g}, "
            f"weight_decay={self.weight_decay:g})"
        )


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
