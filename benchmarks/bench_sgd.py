"""pytest-benchmark for the sgd stem: every benchmark of dlgpu/cases/sgd.py.

    pytest benchmarks/bench_sgd.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_sgd.py -m "not gpu"                        # the CPU backend

What it times: the momentum + weight decay step on 2^26 elements against CuPy (GPU), NumPy and the
reference (CPU).  The GPU numbers that count are the CUDA-event medians in each benchmark's
extra_info (dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/sgd.cu's header): every row, float32 and the 16-bit master-weight steps, at 85-100 % of the measured
copy bandwidth (one pass, 20 bytes per element, all in 16-byte accesses).

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/sgd.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("sgd")
