"""Benchmarks: ``dlgpu bench`` and benchmarks/bench_<stem>.py, over the benchmarks each stem declares.

The package, one job a module:

- :mod:`~dlgpu.bench.timing`: CUDA-event and wall-clock timers, medians, the L2 rotation
- :mod:`~dlgpu.bench.machines`: where benchmarks run (GPU or CPU) and what the device is
- :mod:`~dlgpu.bench.ceilings`: the measured copy bandwidth and product rates
- :mod:`~dlgpu.bench.run`: benchmarks (:mod:`dlgpu.cases`) into rows, against their baselines
- :mod:`~dlgpu.bench.train`: the ``train`` family, a whole training step against PyTorch
- :mod:`~dlgpu.bench.report`: the table and the PNG
- :mod:`~dlgpu.bench.cli`: the command line
- :mod:`~dlgpu.bench.pytest_adapter`: the same rows under pytest-benchmark (imported by the shims only)

A benchmark never asserts a speed.
"""

from dlgpu.bench.cli import FAMILIES, NO_GPU_MESSAGE, add_arguments, benchmarks_for, main
from dlgpu.bench.machines import Machine, cpu_machine, cuda_machine
from dlgpu.bench.run import run_benchmarks
from dlgpu.device import gpu_probe

__all__ = ["FAMILIES", "NO_GPU_MESSAGE", "Machine", "add_arguments", "benchmarks_for", "cpu_machine",
           "cuda_machine", "gpu_probe", "main", "run_benchmarks"]
