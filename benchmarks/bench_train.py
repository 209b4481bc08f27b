"""Training speed: one SGD step of the LeNet on the GPU, one epoch on the CPU, against PyTorch.

    pytest benchmarks/bench_train.py -m gpu --benchmark-only     # on a GPU
    pytest benchmarks/bench_train.py -m "not gpu" --benchmark-only  # the CPU backend

GPU (batch 128, the digits' LeNet of dlgpu.train.models): a round is 50 training
steps (batch copy into the static buffers, forward, backward, SGD with
momentum) followed by one synchronization, timed on the host clock, so the
time per step includes what eager execution really pays: one Python call and
one launch per kernel.  Rows:

    eager   dlgpu's StaticStep called step by step
    graph   the same step captured once into a CUDA graph and replayed (one launch per step)
    torch   the same network (same weights) in PyTorch eager, when PyTorch with CUDA is importable

The rounds are dlgpu.bench.train's, which ``dlgpu bench train`` times too.
Target (issue 7): graph >= 2x PyTorch eager.  CPU: a round is one epoch of
the README's setting (batch 32, 44 steps) on the CPU backend, and the same
network in PyTorch on the CPU when importable.  Each row carries
extra_info["ms_per_step"]; rows after the PyTorch one carry
extra_info["speedup_vs_torch"] (PyTorch's median / this row's).  Benchmarks
never assert a speed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Before PyTorch: dlgpu.cpu asks for passive OpenMP workers, which only takes effect if
# no OpenMP runtime is loaded yet.  Loaded by PyTorch first, it spins and the CPU
# backend's epoch takes 30x longer on a small machine (measured: 0.33 s -> 10-36 s).
import dlgpu.cpu  # noqa: F401
from dlgpu import train
from dlgpu.bench import train as rounds
from dlgpu.train.data import load_digits
from dlgpu.device import gpu_probe

try:
    import torch
except ImportError:
    torch = None

# PyTorch's median seconds per round, by device, so that dlgpu's rows can state the ratio.
_torch_median: dict[str, float] = {}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _record(benchmark, framework: str, device: str, steps: int) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["framework"] = framework
    benchmark.extra_info["ms_per_step"] = 1e3 * median / steps
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]
    if framework == "torch":
        _torch_median[device] = median
    elif device in _torch_median:
        benchmark.extra_info["speedup_vs_torch"] = _torch_median[device] / median


GPU_MODES = [
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="no PyTorch")),
    "eager",
    "graph",
]


@pytest.fixture(scope="module")
def cupy():
    # tests/conftest.py's gpu-marker skip does not reach this folder: probe here.
    has_gpu, why = gpu_probe()
    if not has_gpu:
        pytest.skip(f"gpu benchmark: {why}")
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("mode", GPU_MODES)
def test_gpu_lenet_step(benchmark, digits, cupy, mode):
    if mode == "torch" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    run_round = rounds.gpu_round(mode, digits, cupy, torch)
    benchmark.group = f"train step: lenet, batch {rounds.GPU_BATCH}, GPU"
    benchmark.pedantic(run_round, rounds=10, warmup_rounds=2, iterations=1)
    _record(benchmark, "dlgpu-" + mode if mode != "torch" else "torch", "cuda", rounds.STEPS_PER_ROUND)


CPU_FRAMEWORKS = [
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="no PyTorch")),
    "dlgpu",
]


@pytest.mark.parametrize("framework", CPU_FRAMEWORKS)
def test_cpu_lenet_epoch(benchmark, digits, framework):
    run_epoch, steps, batch = rounds.cpu_round(framework, digits, torch)
    benchmark.group = f"train epoch: lenet, batch {batch}, {steps} steps, CPU"
    benchmark.pedantic(run_epoch, rounds=5, warmup_rounds=1, iterations=1)
    _record(benchmark, framework, "cpu", steps)


def test_models_agree_on_the_torch_copy(digits):
    """The PyTorch rows train the same network: same logits from the same weights."""
    if torch is None:
        pytest.skip("no PyTorch")
    model = train.initial_model("lenet", "relu", 0)
    x = digits[0][:16]
    ours = model(x)
    theirs = rounds.torch_lenet(torch, model, "cpu")(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
