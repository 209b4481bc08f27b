"""pytest-benchmark for the bias_grad stem: every benchmark of dlgpu/cases/bias_grad.py.

    pytest benchmarks/bench_bias_grad.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_bias_grad.py -m "not gpu"                        # the CPU backend

What it times: the standalone bias gradient, plain and ReLU-masked, against CuPy's sums (GPU only).
The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/bias_grad.cu's header): 80-105 % (plain) and 85-105 % (masked) of the measured copy bandwidth -- a
read-only stream, less a few microseconds for the second pass.

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/bias_grad.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("bias_grad")
