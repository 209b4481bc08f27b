"""pytest-benchmark for the gemm stem: every benchmark of dlgpu/cases/gemm.py.

    pytest benchmarks/bench_gemm.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_gemm.py -m "not gpu"                        # the CPU backend

What it times: simt, tc and wgmma products, linear with bias + ReLU, small products, against cuBLAS
(GPU only; the wgmma rows on compute capability 9.0 only).  The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/gemm_tc.cu's header): the tc variant (mma.sync, 16-bit operands read in place by cp.async)
at 4096^3 and 8192^3, bf16/fp16 400-500 TFLOP/s (0.5-0.65x cuBLAS), tf32 200-260 TFLOP/s (0.45-0.65x
cuBLAS TF32); fp32 operands at bf16/fp16 pay a producer pass of ~20 % (4096^3) on top.  The register-staged
loop it replaced was predicted at 150-280 (bf16) and 130-200 (tf32).  The wgmma variant (TMA, mbarrier
ring, 2-CTA clusters sharing B by multicast, persistent; kernels/gemm_wgmma.cu's header has the reasoning),
which a call naming no variant gets on an H100 for bf16 / fp16 and for tf32 in layout nt: bf16/fp16
650-760 TFLOP/s at 4096^3-8192^3 (0.8-0.95x cuBLAS), tf32 325-380 (0.75-0.9x cuBLAS TF32).  The exact fp32
simt variant (kernels/gemm.cu's header): 40-43 TFLOP/s at 4096^3-8192^3, bound by FFMA issue (80 % of the
loop's instructions), 0.65-0.9x cuBLAS SGEMM, linear with bias + ReLU a little more (its baseline takes two
extra passes); the small products run on 4-32 of 132 SMs (no tile gives every SM a block): 0.08-0.26x, linear
256x512x784 0.15-0.45x.

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/gemm.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("gemm")
