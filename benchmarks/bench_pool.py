"""pytest-benchmark for the pool stem: every benchmark of dlgpu/cases/pool.py.

    pytest benchmarks/bench_pool.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_pool.py -m "not gpu"                        # the CPU backend

What it times: 3x3/2 max pooling and its backward on 64 x 64 x 56 x 56 against PyTorch/CuPy (GPU),
NumPy and the reference (CPU).  The GPU numbers that count are the CUDA-event medians in each
benchmark's extra_info (dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/pool.cu's header): the forward at 65-90 % of the measured copy bandwidth, bound by memory; the backward
(a gather of 1-4 windows per input element) at 30-50 %, still bound by instruction issue.

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/pool.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("pool")
