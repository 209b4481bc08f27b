"""Training speed: one SGD step of the LeNet on the GPU, one epoch on the CPU, against PyTorch.

    pytest benchmarks/bench_train.py -m gpu --benchmark-only     # on a GPU
    pytest benchmarks/bench_train.py -m "not gpu" --benchmark-only  # the CPU backend

GPU (batch 128, the digits' LeNet of dlgpu.models): a round is 50 training
steps (batch copy into the static buffers, forward, backward, SGD with
momentum) followed by one synchronization, timed on the host clock, so the
time per step includes what eager execution really pays: one Python call and
one launch per kernel.  Rows:

    eager   dlgpu's StaticStep called step by step
    graph   the same step captured once into a CUDA graph and replayed (one launch per step)
    torch   the same network (same weights) in PyTorch eager, when PyTorch with CUDA is importable

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
from dlgpu import bench, nn, optim, train
from dlgpu.data import load_digits

try:
    import torch
except ImportError:
    torch = None

GPU_BATCH = 128
STEPS_PER_ROUND = 50
CPU_BATCH = train.DEFAULTS["batch_size"]
SETTINGS = {k: train.DEFAULTS[k] for k in ("lr", "momentum", "weight_decay")}

# PyTorch's median seconds per round, by device, so that dlgpu's rows can state the ratio.
_torch_median: dict[str, float] = {}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _batches(n: int, batch: int, count: int) -> list[np.ndarray]:
    order = np.random.default_rng(0).permutation(n)
    per_epoch = n // batch
    return [order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch] for i in range(count)]


# ---------------------------------------------------------------------------
# the same LeNet in PyTorch, starting from dlgpu's weights
# ---------------------------------------------------------------------------


def _torch_lenet(model, device):
    tnn = torch.nn
    c1, c2 = model[0].out_channels, model[2].out_channels
    hidden = model[5].out_features
    net = tnn.Sequential(
        tnn.Conv2d(1, c1, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(c1, c2, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(model[5].in_features, hidden), tnn.ReLU(), tnn.Linear(hidden, 10),
    )
    with torch.no_grad():
        for target, source in zip(net.parameters(), model.state_dict().values()):
            target.copy_(torch.from_numpy(source))
    return net.to(device)


def _torch_step(model, x_all, y_all, batch: int, device: str):
    net = _torch_lenet(model, device)
    opt = torch.optim.SGD(net.parameters(), **SETTINGS)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(x_all).to(device)
    y_all = torch.from_numpy(y_all).to(device)
    x = torch.empty((batch, *x_all.shape[1:]), device=device)
    y = torch.empty((batch,), dtype=torch.int64, device=device)

    def step(indices):
        torch.index_select(x_all, 0, indices, out=x)
        torch.index_select(y_all, 0, indices, out=y)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    return step, lambda idx: torch.from_numpy(idx).to(device)


def _record(benchmark, framework: str, device: str, steps: int) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["framework"] = framework
    benchmark.extra_info["ms_per_step"] = 1e3 * median / steps
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]
    if framework == "torch":
        _torch_median[device] = median
    elif device in _torch_median:
        benchmark.extra_info["speedup_vs_torch"] = _torch_median[device] / median


# ---------------------------------------------------------------------------
# GPU: time per step, batch 128
# ---------------------------------------------------------------------------

GPU_MODES = [
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="no PyTorch")),
    "eager",
    "graph",
]


@pytest.fixture(scope="module")
def cupy():
    # tests/conftest.py's gpu-marker skip does not reach this folder: probe here.
    has_gpu, why = bench.gpu_probe()
    if not has_gpu:
        pytest.skip(f"gpu benchmark: {why}")
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("mode", GPU_MODES)
def test_gpu_lenet_step(benchmark, digits, cupy, mode):
    x_train, y_train = digits[0], digits[1]
    model = train.initial_model("lenet", "relu", 0)
    batches = _batches(len(x_train), GPU_BATCH, STEPS_PER_ROUND)
    stream = cupy.cuda.Stream(non_blocking=True)
    if mode == "torch":
        if not torch.cuda.is_available():
            pytest.skip("PyTorch has no CUDA here")
        step, to_device = _torch_step(model, x_train, y_train, GPU_BATCH, "cuda")
        indices = [to_device(idx) for idx in batches]

        def run_round():
            for idx in indices:
                step(idx)
            torch.cuda.synchronize()
    else:
        model.to("cuda")
        opt = optim.SGD(model.parameters(), **SETTINGS)
        static = train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (GPU_BATCH, 1, 8, 8), cupy)
        x_dev, y_dev = cupy.asarray(x_train), cupy.asarray(y_train)
        indices = [cupy.asarray(idx) for idx in batches]
        run = static
        if mode == "graph":
            graphed = train.GraphedStep(static, stream)
            with stream:
                static.load(x_dev, y_dev, indices[0])
                graphed.warm_up()
                graphed.capture()  # a failure here fails the benchmark: no silent eager row
            run = graphed

        def run_round():
            with stream:
                for idx in indices:
                    static.load(x_dev, y_dev, idx)
                    run()
            stream.synchronize()

    benchmark.group = "train step: lenet, batch 128, GPU"
    benchmark.pedantic(run_round, rounds=10, warmup_rounds=2, iterations=1)
    _record(benchmark, "dlgpu-" + mode if mode != "torch" else "torch", "cuda", STEPS_PER_ROUND)


# ---------------------------------------------------------------------------
# CPU: time per epoch, the README's setting
# ---------------------------------------------------------------------------

CPU_FRAMEWORKS = [
    pytest.param("torch", marks=pytest.mark.skipif(torch is None, reason="no PyTorch")),
    "dlgpu",
]


@pytest.mark.parametrize("framework", CPU_FRAMEWORKS)
def test_cpu_lenet_epoch(benchmark, digits, framework):
    x_train, y_train = digits[0], digits[1]
    model = train.initial_model("lenet", "relu", 0)
    steps = len(x_train) // CPU_BATCH
    batches = _batches(len(x_train), CPU_BATCH, steps)
    if framework == "torch":
        step, to_device = _torch_step(model, x_train, y_train, CPU_BATCH, "cpu")
        indices = [to_device(idx) for idx in batches]

        def run_epoch():
            for idx in indices:
                step(idx)
    else:
        opt = optim.SGD(model.parameters(), **SETTINGS)
        static = train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (CPU_BATCH, 1, 8, 8))

        def run_epoch():
            for idx in batches:
                static.load(x_train, y_train, idx)
                static()

    benchmark.group = f"train epoch: lenet, batch {CPU_BATCH}, {steps} steps, CPU"
    benchmark.pedantic(run_epoch, rounds=5, warmup_rounds=1, iterations=1)
    _record(benchmark, framework, "cpu", steps)


def test_models_agree_on_the_torch_copy(digits):
    """The PyTorch row trains the same network: same logits from the same weights."""
    if torch is None:
        pytest.skip("no PyTorch")
    model = train.initial_model("lenet", "relu", 0)
    x = digits[0][:16]
    ours = model(x)
    theirs = _torch_lenet(model, "cpu")(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
