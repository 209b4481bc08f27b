"""pytest-benchmark for the elementwise stem: every benchmark of dlgpu/cases/elementwise.py.

    pytest benchmarks/bench_elementwise.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_elementwise.py -m "not gpu"                        # the CPU backend

What it times: relu forward and backward on 2^26 elements against CuPy (GPU), NumPy and the
reference (CPU).  The GPU numbers that count are the CUDA-event medians in each benchmark's
extra_info (dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/elementwise.cu's header): relu forward and backward in float32 at 85-100 % of the measured copy
bandwidth (one wave of 16-byte loads, 64-128 KB per SM in flight), the 16-bit storage rows at 80-100 % (half
the bytes, so the ramp weighs more).

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/elementwise.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("elementwise")
