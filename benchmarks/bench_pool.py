"""pytest-benchmark for the pool stem: every benchmark of dlgpu/cases/pool.py.

    pytest benchmarks/bench_pool.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_pool.py -m "not gpu"                        # the CPU backend

What it times: 3x3/2 max pooling and its backward on 64 x 64 x 56 x 56 against PyTorch/CuPy (GPU),
NumPy and the reference (CPU).  The GPU numbers that count are the CUDA-event medians in each
benchmark's extra_info (dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("pool")
