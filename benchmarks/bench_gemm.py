"""pytest-benchmark for the gemm family: every GEMM case of dlgpu.bench's registry, GPU only.

    pytest benchmarks/bench_gemm.py -m gpu --benchmark-json=out.json

Rows: simt fp32 and tc (tf32, bf16, fp16) at 4096^3 and 8192^3 against cublasGemmEx in
the same precision; F.linear with bias + ReLU (one launch) against cuBLAS SGEMM followed
by CuPy's bias add and ReLU, at 4096^3 and batch 256 x 784 -> 512; two small products
(256 x 64 x 576, 128 x 512 x 784).  The numbers that count are the CUDA-event medians in
each benchmark's extra_info (ms, tflops, pct_of_ceiling, baseline_ms, ratio); see
dlgpu.bench.pytest_benchmark_case.  There is no CPU half: the CPU backend's product is
NumPy's, which dlgpu does not claim to beat.
"""

from __future__ import annotations

import pytest

from dlgpu import bench

CASES = bench.cases_for(["gemm"])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.id}-{case.label(case.shape_for('cuda', True))}")
def test_gpu(benchmark, case):
    bench.pytest_benchmark_case(benchmark, case, "cuda")
