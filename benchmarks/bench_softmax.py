"""pytest-benchmark for the softmax stem: every benchmark of dlgpu/cases/softmax.py.

    pytest benchmarks/bench_softmax.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_softmax.py -m "not gpu"                        # the CPU backend

What it times: softmax cross-entropy and its backward on 65536 x 1000 against PyTorch/CuPy (GPU),
NumPy and the reference (CPU).  The GPU numbers that count are the CUDA-event medians in each
benchmark's extra_info (dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/softmax.cu's header): the forward at 72-92 % of the measured copy bandwidth (the one-block mean of the
row losses and a label read after each row's stores cost ~8 %), the backward at 75-95 % (one 512-byte load per
warp in flight: about twice what the bandwidth needs, not more).

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/softmax.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("softmax")
