"""The CPU backend against the float64 reference (and PyTorch, where installed).

    .venv/bin/python -m pytest benchmarks/bench_cpu.py --benchmark-only

Each case times one forward + backward step of a layer, float32, through
dlgpu.functional (so validation is included, as a user pays it):

    conv2d lenet    batch 64, 1 -> 6 channels, 28x28, 5x5, bias + ReLU
    conv2d resnet   batch 8, 64 -> 64 channels, 56x56, 3x3, padding 1, bias + ReLU
    linear mlp      batch 256, 784 -> 512, bias + ReLU

Rows are grouped by case; every row but the reference's carries
extra_info["speedup_vs_reference"] = reference median / its median (see
--benchmark-json), and the table's "Median" column gives the same ratio by
eye.  Benchmarks never assert a speed.  The target for the CPU backend is
>= 5x the reference on both conv layers, on a 2-core machine.

Each row also records the numba and BLAS thread settings and the load
average: on a machine shared with other busy processes, every parallel loop
waits for its slowest thread to be scheduled, and OpenBLAS's spinning
threads make that far worse, so compare rows from the same run, and rerun
with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for figures that measure
work rather than scheduling.
"""

from __future__ import annotations

import os
import statistics
import time

import numba
import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R

try:
    import torch
except ImportError:
    torch = None

CASES = {
    # name: (kind, input shape, weight shape, padding)
    "conv2d-lenet": ("conv2d", (64, 1, 28, 28), (6, 1, 5, 5), 0),
    "conv2d-resnet": ("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), 1),
    "linear-mlp": ("linear", (256, 784), (512, 784), 0),
}

# Median seconds of the reference per case, so other rows can state their speed-up.
_reference_median: dict[str, float] = {}


def _inputs(case: str):
    kind, x_shape, w_shape, _ = CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal(x_shape).astype(np.float32)
    # He-scaled weights keep half the outputs positive, so the ReLU mask matters.
    fan_in = int(np.prod(w_shape[1:]))
    w = (rng.standard_normal(w_shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) * 0.1
    return kind, x, w, b


def _step(backend: str, case: str):
    """A no-argument callable that runs forward + backward of ``case`` on ``backend``."""
    kind, x, w, b = _inputs(case)
    padding = CASES[case][3]
    if backend == "torch":
        return _torch_step(kind, x, w, b, padding)
    ops = F if backend == "cpu" else R
    if kind == "conv2d":
        def forward():
            return ops.conv2d(x, w, b, padding=padding, activation="relu")

        grad_y = np.random.default_rng(1).standard_normal(forward().shape).astype(np.float32)

        def step():
            y = forward()
            return ops.conv2d_backward(grad_y, x, w, y=y, padding=padding, activation="relu")
    else:
        def forward():
            return ops.linear(x, w, b, activation="relu")

        grad_y = np.random.default_rng(1).standard_normal(forward().shape).astype(np.float32)

        def step():
            y = forward()
            return ops.linear_backward(grad_y, x, w, y=y, activation="relu")
    return step


def _torch_step(kind, x, w, b, padding):
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()

    def step():
        for t in (xt, wt, bt):
            t.grad = None
        if kind == "conv2d":
            y = torch.relu(torch.nn.functional.conv2d(xt, wt, bt, padding=padding))
        else:
            y = torch.relu(torch.nn.functional.linear(xt, wt, bt))
        y.backward(torch.ones_like(y))

    return step


def _median_seconds(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


BACKENDS = ["reference", "cpu", pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="no PyTorch"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward(benchmark, case, backend):
    step = _step(backend, case)
    benchmark.group = case
    # One warm-up round compiles the numba kernels; the reference gets fewer rounds
    # because each takes a large fraction of a second.
    rounds = 5 if backend == "reference" else 20
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["numba_threads"] = numba.get_num_threads()
    benchmark.extra_info["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]
    if backend == "reference":
        _reference_median[case] = median
        return
    if case not in _reference_median:  # this row was selected without the reference's
        _reference_median[case] = _median_seconds(_step("reference", case))
    speedup = _reference_median[case] / median
    benchmark.extra_info["reference_median_s"] = _reference_median[case]
    benchmark.extra_info["speedup_vs_reference"] = round(speedup, 2)
    print(f"\n{case} {backend}: {median * 1e3:.2f} ms, {speedup:.1f}x the reference")
