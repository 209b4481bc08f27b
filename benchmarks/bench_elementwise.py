"""pytest-benchmark for the elementwise family: every case of dlgpu.bench's registry, GPU and CPU.

    pytest benchmarks/bench_elementwise.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_elementwise.py -m "not gpu"                        # the CPU backend

The GPU numbers that count are the CUDA-event medians in each benchmark's
extra_info (ms, gbps, pct_of_ceiling, baseline_ms, ratio); see
dlgpu.bench.pytest_benchmark_case for why pytest-benchmark's own column is a
synchronized host-side time.
"""

from __future__ import annotations

import pytest

from dlgpu import bench

CASES = bench.cases_for(["elementwise"])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_gpu(benchmark, case):
    bench.pytest_benchmark_case(benchmark, case, "cuda")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_cpu(benchmark, case):
    bench.pytest_benchmark_case(benchmark, case, "cpu")
