"""pytest-benchmark for the sgd stem: every benchmark of dlgpu/cases/sgd.py.

    pytest benchmarks/bench_sgd.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_sgd.py -m "not gpu"                        # the CPU backend

What it times: the momentum + weight decay step on 2^26 elements against CuPy (GPU), NumPy and the
reference (CPU).  The GPU numbers that count are the CUDA-event medians in each benchmark's
extra_info (dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("sgd")
