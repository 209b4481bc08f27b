"""pytest-benchmark for the bias_grad stem: every benchmark of dlgpu/cases/bias_grad.py.

    pytest benchmarks/bench_bias_grad.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_bias_grad.py -m "not gpu"                        # the CPU backend

What it times: the standalone bias gradient, plain and ReLU-masked, against CuPy's sums (GPU only).
The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("bias_grad")
