"""Cases of the sgd stem (kernels/sgd.cu): one SGD step in place, PyTorch's rule.

Checks: plain SGD, momentum, and momentum with weight decay, on odd shapes;
param and velocity are compared after the step with the reference's step
computed in float64.  Tolerance: elementwise.

Benchmark: the momentum + weight decay step on 2^26 elements (read param,
grad, velocity; write param, velocity), against the same update in CuPy
(GPU) or NumPy and the reference (CPU); and the mixed-precision step of each
16-bit dtype (read the 16-bit grad, the float32 master and velocity; write
master, velocity and the 16-bit param: 20 bytes per element, as float32's).

Each benchmark carries the share of the copy bandwidth its kernel was
predicted to reach on an H100 before any GPU ran it (``predicted``); the
reasoning, from the sm_90a SASS, is in kernels/sgd.cu's header.
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import (STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, prod, randn,
                              storage_unavailable)
from dlgpu.cases.elementwise import SHAPES
from dlgpu.testing import random_array
from dlgpu.errors import ArgumentError, DeviceError, LayoutError, ShapeError
from dlgpu.testing.bad_input import BadInput, FakeCupy, buffer, on_cpu, on_gpu, rand, readonly, x4

FAMILY = "sgd"
LR = 0.1


def _check(shape: tuple, momentum: float, weight_decay: float, dtype=None, master: bool = False) -> Check:
    """One step; with ``master`` on fp32 master weights (param 16-bit, velocity float32) and a loss scale."""
    grad_scale = 8.0 if master else 1.0

    def run(rng, target):
        param, grad = (random_array(rng, shape, target.dtype) for _ in range(2))
        velocity = random_array(rng, shape, np.float32 if master else target.dtype)
        weights = param.astype(np.float32) if master else None
        ref_param, ref_velocity = param.astype(np.float64), velocity.astype(np.float64)
        ref_weights = None if weights is None else weights.astype(np.float64)
        R.sgd_step(ref_param, grad, ref_velocity, lr=LR, momentum=momentum, weight_decay=weight_decay,
                   master=ref_weights, grad_scale=grad_scale)
        dev_param, dev_velocity = target.array(param), target.array(velocity)
        dev_weights = None if weights is None else target.array(weights)
        target.backend.sgd_step(dev_param, target.array(grad), dev_velocity, LR, momentum, weight_decay, dev_weights,
                                grad_scale)
        outputs = [Output("param", dev_param, ref_param, True), Output("velocity", dev_velocity, ref_velocity, True)]
        return outputs + ([] if weights is None else [Output("master", dev_weights, ref_weights, True)])

    label = f"{'x'.join(map(str, shape))} momentum {momentum:g} wd {weight_decay:g}" + (" master" if master else "")
    return Check("sgd_step", label, run, dtype=dtype)


def checks(quick: bool = True) -> list[Check]:
    return [_check((17,), 0.0, 0.0), _check((33, 65), 0.9, 0.0), _check((5, 3, 7), 0.9, 1e-2),
            # 16-bit storage: the 16-bit state alone, and fp32 master weights with and without momentum.
            *(c for dtype in STORAGE_DTYPES for c in (_check((33, 65), 0.9, 1e-2, dtype),
                                                       _check((33, 65), 0.9, 1e-2, dtype, master=True),
                                                       _check((17,), 0.0, 0.0, dtype, master=True)))]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

SETTINGS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
# The share of the measured copy bandwidth predicted for every row on an H100 (kernels/sgd.cu's header argues it):
# one pass, 20 bytes per element in 16-byte accesses, whatever the storage.
_PREDICTED = Prediction("pct_of_ceiling", 85, 100, why="kernels/sgd.cu")


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


def _master_inputs(dtype):
    def make(xp, shape, seed):
        d = _inputs(xp, shape, seed)
        return {"param": d["param"].astype(dtype), "grad": d["grad"].astype(dtype), "velocity": d["velocity"],
                "master": d["param"]}

    return make


def xp_master_step(xp, d):
    """The mixed-precision update written with array expressions: on the master copy, then rounded."""
    g = d["grad"].astype(np.float32) + SETTINGS["weight_decay"] * d["master"]
    d["velocity"] *= SETTINGS["momentum"]
    d["velocity"] += g
    d["master"] -= SETTINGS["lr"] * d["velocity"]
    d["param"][...] = d["master"].astype(d["param"].dtype)


def _master_row(dtype: np.dtype) -> Benchmark:
    return Benchmark(
        family=FAMILY, op="sgd_step", variant=f"{dtype.name} master+momentum+wd", dtype=dtype.name, shapes=SHAPES,
        make_inputs=_master_inputs(dtype),
        run=lambda d: F.sgd_step(d["param"], d["grad"], d["velocity"], master=d["master"], **SETTINGS),
        xp_baseline=xp_master_step,
        reference=lambda d: R.sgd_step(d["param"], d["grad"], d["velocity"], master=d["master"], **SETTINGS),
        # read grad (16-bit), master, velocity; write master, velocity, param (16-bit)
        bytes_moved=lambda s: (2 * dtype.itemsize + f32(4)) * prod(s),
        note="float32 master weights and velocity, 16-bit param and grad; fp32 arithmetic",
        unavailable=storage_unavailable(dtype), predicted=_PREDICTED,
    )


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="sgd_step", variant="momentum+wd", shapes=SHAPES,
        make_inputs=_inputs,
        run=_run,
        xp_baseline=xp_step,
        reference=lambda d: R.sgd_step(d["param"], d["grad"], d["velocity"], **SETTINGS),
        bytes_moved=lambda s: f32(5 * prod(s)),  # read param, grad, velocity; write param, velocity
        note=f"lr={SETTINGS['lr']} momentum={SETTINGS['momentum']} weight_decay={SETTINGS['weight_decay']}",
        predicted=_PREDICTED,
    ),
    *(_master_row(np.dtype(dtype)) for dtype in STORAGE_DTYPES),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("sgd-velocity-shape", lambda w: F.sgd_step(w(rand(4)), w(rand(4)), w(rand(5)), lr=0.1, momentum=0.9),
                 ShapeError, "velocity has shape (5,)"),
        BadInput("sgd-weight-decay-inf",
                 lambda w: F.sgd_step(w(rand(4)), w(rand(4)), None, lr=0.1, weight_decay=np.inf),
                 ArgumentError, "weight_decay must be finite"),
        BadInput("sgd-momentum-negative",
                 lambda w: F.sgd_step(w(rand(4)), w(rand(4)), w(rand(4)), lr=0.1, momentum=-0.5),
                 ArgumentError, "momentum must be finite and >= 0"),
        BadInput("sgd-strided-param", lambda w: F.sgd_step(w(rand(4, 6)[:, ::2]), w(rand(4, 3)), None, lr=0.1),
                 LayoutError, "param is not C-contiguous"),
        BadInput("sgd-strided-velocity",
                 lambda w: F.sgd_step(w(rand(4, 3)), w(rand(4, 3)), w(rand(3, 4)).T, lr=0.1, momentum=0.9),
                 LayoutError, "velocity is not C-contiguous"),
        BadInput("sgd-velocity-aliases-grad",
                 lambda w: F.sgd_step(w(rand(5, 7)), w(buffer), w(buffer), lr=0.1, momentum=0.9),
                 LayoutError, "velocity overlaps grad"),
        on_cpu("cpu-velocity-readonly",
               lambda: F.sgd_step(rand(5, 7), rand(5, 7), readonly(5, 7), lr=0.1, momentum=0.9),
               LayoutError, "velocity is read-only"),
        on_gpu("gpu-sgd-different-devices",
               lambda: F.sgd_step(FakeCupy(rand(4), 1), FakeCupy(rand(4), 1), FakeCupy(rand(4), 2), lr=0.1,
                                  momentum=0.9),
               DeviceError, "velocity on GPU 2"),
        on_gpu("mix-sgd-velocity",
               lambda: F.sgd_step(FakeCupy(rand(4)), FakeCupy(rand(4)), rand(4), lr=0.1, momentum=0.9),
               DeviceError, "velocity is numpy"),
        on_cpu("sgd-grad-shape", lambda: F.sgd_step(rand(4), rand(5), None, lr=0.1), ShapeError, "grad has shape (5,)"),
        on_cpu("lr-negative", lambda: F.sgd_step(rand(4), rand(4), None, lr=-0.1), ArgumentError, "lr must be finite"),
        on_cpu("lr-nan", lambda: F.sgd_step(rand(4), rand(4), None, lr=float("nan")),
               ArgumentError, "lr must be finite"),
        on_cpu("momentum-without-velocity", lambda: F.sgd_step(rand(4), rand(4), None, lr=0.1, momentum=0.9),
               ArgumentError, "needs a velocity"),
        on_cpu("sgd-sliced-param", lambda: F.sgd_step(x4[:, :, ::2], rand(2, 3, 4, 8), None, lr=0.1),
               LayoutError, "param is not C-contiguous"),
        on_cpu("sgd-param-aliases-grad", lambda: F.sgd_step(buffer, buffer, None, lr=0.1),
               LayoutError, "param overlaps grad"),
        on_cpu("sgd-readonly-param", lambda: F.sgd_step(readonly(5, 3), rand(5, 3), None, lr=0.1),
               LayoutError, "read-only"),
    ]
