"""Cases of the mse stem (kernels/mse.cu): the squared error of the review's Figure 1, and its gradient.

Checks: one element, a 1-D batch (one output per example), Figure 1's
(N, 1), a (7, 10) and a (3, 5, 4) batch, and 1021 x 33 elements (several
blocks of partial sums; more outside quick mode); in bfloat16 and float16
too, at (7, 10) and 1021 x 33 (a float32 loss, the gradient in the inputs'
dtype).  The loss accumulates (tolerance: accumulating), the gradient is
elementwise.

Benchmarks: 65536 x 1000 outputs (read y and t; the backward also writes the
gradient), against the same formula in CuPy or NumPy, PyTorch's mse_loss on
the GPU, and the reference on the CPU.  Each carries the share of the copy
bandwidth predicted for an H100 before any GPU ran it (``predicted``;
kernels/mse.cu's header has the reasoning).
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, prod, randn, torch_view
from dlgpu.errors import DeviceError, DtypeError, ShapeError
from dlgpu.precision import loss_dtype
from dlgpu.testing import random_array, to_numpy
from dlgpu.testing.bad_input import BadInput, FakeCupy, a2, on_cpu, on_gpu, rand

FAMILY = "mse"


def _check(shape: tuple, dtype=None) -> list[Check]:
    label = "x".join(map(str, shape))

    def inputs(rng, target):
        return random_array(rng, shape, target.dtype), random_array(rng, shape, target.dtype)

    def run_forward(rng, target):
        y, t = inputs(rng, target)
        loss = to_numpy(target.backend.mse_loss(target.array(y), target.array(t))).reshape(1)
        if loss.dtype != loss_dtype(target.dtype):  # 16-bit inputs: a float32 loss
            loss = np.full(1, np.inf)
        return [Output("loss", loss, np.reshape(R.mse_loss(y, t), 1), False)]

    def run_backward(rng, target):
        y, t = inputs(rng, target)
        grad = target.backend.mse_loss_backward(target.array(y), target.array(t))
        if np.dtype(grad.dtype) != target.dtype:
            grad = np.full(shape, np.inf)
        return [Output("grad", grad, R.mse_loss_backward(y, t), True)]

    return [Check("mse_loss", label, run_forward, dtype=dtype),
            Check("mse_loss_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    shapes = [(1,), (9,), (13, 1), (7, 10), (3, 5, 4), (1021, 33)] + ([] if quick else [(4099, 257)])
    return [*(check for shape in shapes for check in _check(shape)),
            *(check for dtype in STORAGE_DTYPES for shape in ((7, 10), (1021, 33)) for check in _check(shape, dtype))]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

SHAPES = {"gpu": (65536, 1000), "cpu": (16384, 1000), "cpu_quick": (2048, 1000)}


def _inputs(xp, shape, seed):
    return {"y": randn(xp, shape, seed), "t": randn(xp, shape, seed + 1)}


def xp_forward(xp, d):
    diff = d["y"] - d["t"]
    return 0.5 * (diff * diff).sum() / d["y"].shape[0]


def xp_backward(xp, d):
    return (d["y"] - d["t"]) * np.float32(1.0 / d["y"].shape[0])


def torch_forward(torch, d):
    y = torch_view(torch, d["y"])
    return torch.nn.functional.mse_loss(y, torch_view(torch, d["t"]), reduction="sum") * (0.5 / y.shape[0])


def torch_backward(torch, d):
    """What autograd runs for mse_loss's backward: aten.mse_loss_backward (reduction sum), scaled."""
    y, t = torch_view(torch, d["y"]), torch_view(torch, d["t"])
    if "_grad_loss" not in d:
        d["_grad_loss"] = torch.full((), 0.5 / y.shape[0], device=y.device, dtype=y.dtype)
    return torch.ops.aten.mse_loss_backward(d["_grad_loss"], y, t, 2)  # 2: at::Reduction::Sum


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="mse_loss", shapes=SHAPES, make_inputs=_inputs,
        run=lambda d: F.mse_loss(d["y"], d["t"]),
        xp_baseline=xp_forward, torch_baseline=torch_forward,
        reference=lambda d: R.mse_loss(d["y"], d["t"]),
        bytes_moved=lambda shape: f32(2 * prod(shape)),  # read y and t
        predicted=Prediction("pct_of_ceiling", 85, 105, why="kernels/mse.cu"),
    ),
    Benchmark(
        family=FAMILY, op="mse_loss_backward", shapes=SHAPES, make_inputs=_inputs,
        run=lambda d: F.mse_loss_backward(d["y"], d["t"]),
        xp_baseline=xp_backward, torch_baseline=torch_backward,
        reference=lambda d: R.mse_loss_backward(d["y"], d["t"]),
        bytes_moved=lambda shape: f32(3 * prod(shape)),  # read y and t, write the gradient
        predicted=Prediction("pct_of_ceiling", 85, 100, why="kernels/mse.cu"),
    ),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("mse-shapes", lambda w: F.mse_loss(w(a2), w(rand(5, 1))), ShapeError, "nothing is broadcast"),
        BadInput("mse-backward-shapes", lambda w: F.mse_loss_backward(w(a2), w(a2.T.copy())),
                 ShapeError, "t has shape (7, 5) but y has (5, 7)"),
        BadInput("mse-0d", lambda w: F.mse_loss(w(rand()), w(rand())), ShapeError, "must have a batch dimension"),
        BadInput("mse-empty-outputs", lambda w: F.mse_loss(w(rand(4, 0)), w(rand(4, 0))),
                 ShapeError, "only the batch (first) dimension may be 0"),
        BadInput("mse-dtypes", lambda w: F.mse_loss(w(a2), w(a2.astype(np.float64))),
                 DtypeError, "must share one dtype"),
        BadInput("mse-int-targets", lambda w: F.mse_loss(w(a2), w(np.ones((5, 7), np.int64))),
                 DtypeError, "t has dtype int64"),
        on_gpu("mix-mse-targets", lambda: F.mse_loss(FakeCupy(a2), a2), DeviceError, "t is numpy"),
        on_cpu("mse-targets-list", lambda: F.mse_loss(a2, a2.tolist()), DtypeError, "t must be a NumPy or CuPy array"),
    ]
