"""pytest-benchmark for the mse stem: every benchmark of dlgpu/cases/mse.py.

    pytest benchmarks/bench_mse.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_mse.py -m "not gpu"                        # the CPU backend

What it times: the squared error and its gradient on 65536 x 1000 outputs against PyTorch/CuPy
(GPU), NumPy and the reference (CPU).  The GPU numbers that count are the CUDA-event medians in
each benchmark's extra_info (dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/mse.cu's header): the loss at 85-105 % of the measured copy bandwidth (read-only; the double
accumulation has spare throughput), the gradient at 85-100 %.

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/mse.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("mse")
