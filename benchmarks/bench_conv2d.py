"""pytest-benchmark for the conv2d stem: every benchmark of dlgpu/cases/conv2d.py.

    pytest benchmarks/bench_conv2d.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_conv2d.py -m "not gpu"                        # the CPU backend

What it times: ResNet-50 and LeNet layers, forward, bias + ReLU, dgrad and wgrad, against cuDNN (GPU
only).  The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("conv2d")
