"""PyTorch training steps on dlgpu: PyTorch eager, the converted model eager, the converted model compiled.

    pytest benchmarks/bench_torch.py -m "not gpu" --benchmark-only   # the CPU
    pytest benchmarks/bench_torch.py -m gpu --benchmark-only         # a GPU (CuPy and a CUDA build of torch)

Two networks, each a plain ``torch.nn`` model and ``dlgpu.torch.convert`` of
it with the same weights:

    lenet         the digits LeNet of examples/torch_ddp.py (what ``dlgpu train`` fits), 1x8x8 images
    resnet-block  ResNet's basic block without batch norm (two 3x3 convolutions, a strided 1x1
                  shortcut, ReLUs) and a linear classifier on its flattened output

Rows per network and device:

    torch           PyTorch eager: its own kernels (MKL-DNN/cuDNN)
    dlgpu           the converted model, eager: dlgpu's kernels through torch.ops.dlgpu
    dlgpu-compiled  the converted model under torch.compile (inductor, fullgraph=True): the
                    graph around the custom ops is compiled; compilation happens in warm-up

A step is zero_grad, forward, cross-entropy, backward and an SGD step with
momentum, on a fixed batch; a round is STEPS steps, then (GPU) one
synchronization, timed on the host clock.  Each row carries
extra_info["ms_per_step"], the 1-minute load average (the CPU figures are
only comparable on a quiet machine) and, after the torch row,
extra_info["speedup_vs_torch"].  Benchmarks never assert a speed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Before torch: dlgpu.cpu asks for passive OpenMP workers (see dlgpu.torch).
import dlgpu.cpu  # noqa: F401, I001

torch = pytest.importorskip("torch")
import dlgpu.torch as dt  # noqa: E402
from dlgpu import bench  # noqa: E402

STEPS = 10
MODES = ("torch", "dlgpu", "dlgpu-compiled")
# (batch, channels, image side) of the ResNet block per device: small on a CPU, a realistic layer on a GPU.
RESNET_SHAPES = {"cpu": (16, 16, 16), "cuda": (128, 64, 32)}
LENET_BATCH = {"cpu": 32, "cuda": 128}

_torch_median: dict[tuple[str, str], float] = {}


def _example():
    path = Path(__file__).resolve().parent.parent / "examples" / "torch_ddp.py"
    spec = importlib.util.spec_from_file_location("torch_ddp_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ResNetBlock(torch.nn.Module):
    """A basic block (stride 2, doubling the channels) and a linear classifier on its output."""

    def __init__(self, channels: int, side: int, classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.shortcut = nn.Conv2d(channels, 2 * channels, 1, stride=2)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * channels * (side // 2) ** 2, classes)

    def forward(self, x):
        y = self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))
        return self.classifier(self.flatten(y))


def _network(name: str, device: str):
    """(plain torch model, input batch, labels), seeded."""
    torch.manual_seed(0)
    if name == "lenet":
        model, shape = _example().lenet(), (LENET_BATCH[device], 1, 8, 8)
    else:
        batch, channels, side = RESNET_SHAPES[device]
        model, shape = ResNetBlock(channels, side), (batch, channels, side, side)
    x = torch.randn(*shape)
    labels = torch.randint(0, 10, (shape[0],))
    return model.to(device), x.to(device), labels.to(device)


def _step(mode: str, model, x, labels):
    if mode == "torch":
        loss_fn = torch.nn.CrossEntropyLoss()
    else:
        model, loss_fn = dt.convert(model), dt.CrossEntropyLoss()
    forward = lambda x, y: loss_fn(model(x), y)  # noqa: E731
    if mode == "dlgpu-compiled":
        forward = torch.compile(forward, fullgraph=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        forward(x, labels).backward()
        optimizer.step()

    return step


def _run(benchmark, name: str, mode: str, device: str) -> None:
    model, x, labels = _network(name, device)
    step = _step(mode, model, x, labels)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_round():
        for _ in range(STEPS):
            step()
        synchronize()

    benchmark.group = f"torch train step: {name}, batch {x.shape[0]}, {device}"
    benchmark.pedantic(run_round, rounds=5, warmup_rounds=2, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["ms_per_step"] = 1e3 * median / STEPS
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]
    if mode == "torch":
        _torch_median[(name, device)] = median
    elif (name, device) in _torch_median:
        benchmark.extra_info["speedup_vs_torch"] = _torch_median[(name, device)] / median


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lenet", "resnet-block"])
def test_cpu_train_step(benchmark, name, mode):
    _run(benchmark, name, mode, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lenet", "resnet-block"])
def test_gpu_train_step(benchmark, name, mode):
    # tests/conftest.py's gpu-marker skip does not reach this folder: probe here.
    has_gpu, why = bench.gpu_probe()
    if not has_gpu:
        pytest.skip(f"gpu benchmark: {why}")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    _run(benchmark, name, mode, "cuda")
