"""pytest-benchmark for the gemm stem: every benchmark of dlgpu/cases/gemm.py.

    pytest benchmarks/bench_gemm.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_gemm.py -m "not gpu"                        # the CPU backend

What it times: simt and tc products, linear with bias + ReLU, small products, against cuBLAS (GPU
only).  The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("gemm")
