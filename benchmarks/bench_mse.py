"""pytest-benchmark for the mse stem: every benchmark of dlgpu/cases/mse.py.

    pytest benchmarks/bench_mse.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_mse.py -m "not gpu"                        # the CPU backend

What it times: the squared error and its gradient on 65536 x 1000 outputs against PyTorch/CuPy
(GPU), NumPy and the reference (CPU).  The GPU numbers that count are the CUDA-event medians in
each benchmark's extra_info (dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("mse")
