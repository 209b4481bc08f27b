"""The CPU backend against PyTorch's CPU kernels (or, without torch, the float64 reference).

    .venv/bin/python -m pytest benchmarks/bench_cpu.py --benchmark-only
    .venv/bin/python -m pytest benchmarks/bench_cpu.py --benchmark-only --benchmark-json=cpu.json

Each case times one layer, float32, through dlgpu.functional (so validation
is included, as a user pays it), forward only ("forward") and forward plus
backward ("step"), with bias and ReLU:

    conv2d-lenet-c1   batch 64, 1 -> 6 channels, 28x28, 5x5
    conv2d-lenet-c3   batch 64, 6 -> 16 channels, 14x14, 5x5
    conv2d-resnet     batch 8, 64 -> 64 channels, 56x56, 3x3, padding 1
    linear-mlp        batch 256, 784 -> 512

Every row is the baseline's and dlgpu's time measured in the same run,
interleaved (dlgpu, baseline, dlgpu, baseline, ...) so that both see the
same load on a shared machine, and extra_info carries
speedup_vs_baseline = baseline median / dlgpu median, the two medians, the
1-minute load average before and after, and the thread configuration
(dlgpu.cpu.threads.thread_info: numba's pool, torch's threads).  The table's
own "Median" column is dlgpu's time.  Benchmarks never assert a speed; the
target for the conv layers is >= 1.0x torch, both directions, on 2 threads.
With torch imported (it is, here), numba's loops run on torch's OpenMP pool
(see dlgpu/cpu/threads.py); run once with OMP_WAIT_POLICY=PASSIVE and once without to
see what torch's spinning workers cost either side.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cpu.threads import thread_info

try:
    import torch
except ImportError:
    torch = None

CASES = {
    # name: (kind, input shape, weight shape, padding)
    "conv2d-lenet-c1": ("conv2d", (64, 1, 28, 28), (6, 1, 5, 5), 0),
    "conv2d-lenet-c3": ("conv2d", (64, 6, 14, 14), (16, 6, 5, 5), 0),
    "conv2d-resnet": ("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), 1),
    "linear-mlp": ("linear", (256, 784), (512, 784), 0),
}
PASSES = ["forward", "step"]

# Interleaved repetitions per row: the reference takes up to seconds a step.
_REPEATS = {"torch": 21, "reference": 3}


def _inputs(case: str):
    kind, x_shape, w_shape, padding = CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal(x_shape).astype(np.float32)
    # He-scaled weights keep half the outputs positive, so the ReLU mask matters.
    w = (rng.standard_normal(w_shape) * np.sqrt(2.0 / np.prod(w_shape[1:]))).astype(np.float32)
    b = (rng.standard_normal(w_shape[0]) * 0.1).astype(np.float32)
    return kind, x, w, b, padding


def _numpy_pass(ops, case: str, which: str):
    """A no-argument callable: ``which`` pass of ``case`` through ``ops`` (dlgpu.functional or dlgpu.reference)."""
    kind, x, w, b, padding = _inputs(case)
    geometry = dict(padding=padding) if kind == "conv2d" else {}
    forward = getattr(ops, kind)
    backward = getattr(ops, f"{kind}_backward")
    y = forward(x, w, b, activation="relu", **geometry)
    grad_y = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)

    def run_forward():
        return forward(x, w, b, activation="relu", **geometry)

    def run_step():
        y = forward(x, w, b, activation="relu", **geometry)
        return backward(grad_y, x, w, y=y, activation="relu", **geometry)

    return run_forward if which == "forward" else run_step


def _torch_pass(case: str, which: str):
    kind, x, w, b, padding = _inputs(case)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    if kind == "conv2d":
        def layer():
            return torch.relu(torch.nn.functional.conv2d(xt, wt, bt, padding=padding))
    else:
        def layer():
            return torch.relu(torch.nn.functional.linear(xt, wt, bt))
    grad_y = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(layer().shape)).astype(np.float32))

    def run_forward():
        with torch.no_grad():
            return layer()

    def run_step():
        for t in (xt, wt, bt):
            t.grad = None
        layer().backward(grad_y)

    return run_forward if which == "forward" else run_step


def _interleaved_medians(first, second, repeats: int):
    """Median seconds of each callable, timed alternately after one warm-up call each."""
    first(), second()
    times = ([], [])
    for _ in range(repeats):
        for fn, sink in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


@pytest.mark.parametrize("which", PASSES)
@pytest.mark.parametrize("case", list(CASES))
def test_cpu_against_baseline(benchmark, case, which):
    baseline = "torch" if torch is not None else "reference"
    ours = _numpy_pass(F, case, which)
    theirs = _torch_pass(case, which) if baseline == "torch" else _numpy_pass(R, case, which)
    benchmark.group = f"{case} {which}"
    load_before = os.getloadavg()[0]
    # One warm-up round compiles (or loads) the numba kernels.
    benchmark.pedantic(ours, rounds=10, warmup_rounds=1, iterations=1)
    dlgpu_median, baseline_median = _interleaved_medians(ours, theirs, _REPEATS[baseline])
    speedup = baseline_median / dlgpu_median
    benchmark.extra_info.update(
        baseline=baseline,
        dlgpu_median_s=dlgpu_median,
        baseline_median_s=baseline_median,
        speedup_vs_baseline=round(speedup, 2),
        load_average_1min=(load_before, os.getloadavg()[0]),
        threads=thread_info(),
    )
    print(f"\n{case} {which}: dlgpu {dlgpu_median * 1e3:.2f} ms, {baseline} {baseline_median * 1e3:.2f} ms, "
          f"{speedup:.2f}x {baseline}'s speed (load {load_before:.1f})")
