"""Cases of the bias_grad stem (kernels/bias_grad.cu): the deterministic bias gradient.

It has no public op of its own: linear_backward and conv2d_backward return
its result as grad_b, and their checks (dlgpu/cases/gemm.py, conv2d.py)
compare it.  Benchmarks: the standalone kernel pair on an NCHW gradient, plain
and masked by a fused ReLU's output, against the same sums in CuPy; GPU
only, since the CPU backend computes grad_b inside its products.  Each
carries the share of the copy bandwidth predicted for an H100 before any GPU
ran it (``predicted``; kernels/bias_grad.cu's header has the reasoning).
"""

from __future__ import annotations

import numpy as np

from dlgpu.cases.case import Benchmark, Check, Prediction, f32, gpu_only, prod, randn

FAMILY = "bias_grad"
SHAPES = {"gpu": (64, 256, 64, 64), "cpu": (16, 64, 64, 64), "cpu_quick": (4, 64, 64, 64)}
NOT_ON_CPU = "GPU-only: the CPU backend has no standalone bias gradient (grad_b comes with its products)"


def checks(quick: bool = True) -> list[Check]:
    return []  # no public op: grad_b is checked with linear_backward and conv2d_backward


def bad_inputs() -> list:
    return []  # no public op: what reaches the kernel was validated as linear's or conv2d's


def _inputs(xp, shape, seed):
    return {"grad_y": randn(xp, shape, seed)}


def _masked_inputs(xp, shape, seed):
    return {"grad_y": randn(xp, shape, seed), "y": xp.maximum(randn(xp, shape, seed + 1), 0)}


def _run(d):
    from dlgpu.cuda.bias_grad import bias_grad

    return bias_grad(d["grad_y"], d.get("y"))


def xp_sum(xp, d):
    """The same sums written with array expressions."""
    if "y" in d:
        return xp.where(d["y"] > 0, d["grad_y"], np.float32(0)).sum(axis=(0, 2, 3))
    return d["grad_y"].sum(axis=(0, 2, 3))


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="bias_grad", variant="NCHW", shapes=SHAPES,
        make_inputs=_inputs, run=_run, xp_baseline=xp_sum,
        bytes_moved=lambda s: f32(prod(s) + s[1]),
        unavailable=gpu_only(NOT_ON_CPU),
        predicted=Prediction("pct_of_ceiling", 80, 105, why="kernels/bias_grad.cu"),
    ),
    Benchmark(
        family=FAMILY, op="bias_grad", variant="NCHW+relu-mask", shapes=SHAPES,
        make_inputs=_masked_inputs, run=_run, xp_baseline=xp_sum,
        bytes_moved=lambda s: f32(2 * prod(s) + s[1]),  # read grad_y and y; write (C,)
        unavailable=gpu_only(NOT_ON_CPU),
        predicted=Prediction("pct_of_ceiling", 85, 105, why="kernels/bias_grad.cu"),
    ),
)
