"""pytest-benchmark for the elementwise stem: every benchmark of dlgpu/cases/elementwise.py.

    pytest benchmarks/bench_elementwise.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_elementwise.py -m "not gpu"                        # the CPU backend

What it times: relu forward and backward on 2^26 elements against CuPy (GPU), NumPy and the
reference (CPU).  The GPU numbers that count are the CUDA-event medians in each benchmark's
extra_info (dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("elementwise")
