"""Cases of the sgd stem (kernels/sgd.cu): one SGD step in place, PyTorch's rule.

Checks: plain SGD, momentum, and momentum with weight decay, on odd shapes;
param and velocity are compared after the step with the reference's step
computed in float64.  Tolerance: elementwise.

Benchmark: the momentum + weight decay step on 2^26 elements (read param,
grad, velocity; write param, velocity), against the same update in CuPy
(GPU) or NumPy and the reference (CPU).
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import Benchmark, Check, Output, f32, prod, randn
from dlgpu.cases.elementwise import SHAPES
from dlgpu.testing import random_array

FAMILY = "sgd"
LR = 0.1


def _check(shape: tuple, momentum: float, weight_decay: float) -> Check:
    def run(rng, target):
        param, grad, velocity = (random_array(rng, shape, target.dtype) for _ in range(3))
        ref_param, ref_velocity = param.astype(np.float64), velocity.astype(np.float64)
        R.sgd_step(ref_param, grad, ref_velocity, lr=LR, momentum=momentum, weight_decay=weight_decay)
        dev_param, dev_velocity = target.array(param), target.array(velocity)
        target.backend.sgd_step(dev_param, target.array(grad), dev_velocity, LR, momentum, weight_decay)
        return [Output("param", dev_param, ref_param, True), Output("velocity", dev_velocity, ref_velocity, True)]

    return Check("sgd_step", f"{'x'.join(map(str, shape))} momentum {momentum:g} wd {weight_decay:g}", run)


def checks(quick: bool = True) -> list[Check]:
    return [_check((17,), 0.0, 0.0), _check((33, 65), 0.9, 0.0), _check((5, 3, 7), 0.9, 1e-2)]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

SETTINGS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


def _inputs(xp, shape, seed):
    return {"param": randn(xp, shape, seed), "grad": randn(xp, shape, seed + 1),
            "velocity": randn(xp, shape, seed + 2)}


def xp_step(xp, d):
    """The same update written with array expressions."""
    g = d["grad"] + SETTINGS["weight_decay"] * d["param"]
    d["velocity"] *= SETTINGS["momentum"]
    d["velocity"] += g
    d["param"] -= SETTINGS["lr"] * d["velocity"]


def _run(d):
    F.sgd_step(d["param"], d["grad"], d["velocity"], **SETTINGS)


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="sgd_step", variant="momentum+wd", shapes=SHAPES,
        make_inputs=_inputs,
        run=_run,
        xp_baseline=xp_step,
        reference=lambda d: R.sgd_step(d["param"], d["grad"], d["velocity"], **SETTINGS),
        bytes_moved=lambda s: f32(5 * prod(s)),  # read param, grad, velocity; write param, velocity
        note=f"lr={SETTINGS['lr']} momentum={SETTINGS['momentum']} weight_decay={SETTINGS['weight_decay']}",
    ),
)
