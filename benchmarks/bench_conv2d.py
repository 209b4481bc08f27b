"""pytest-benchmark for the conv2d family: every convolution case of dlgpu.bench's registry, GPU only.

    pytest benchmarks/bench_conv2d.py -m gpu --benchmark-json=out.json

Rows, for ResNet-50's 7x7/2 3->64 at 224^2, 3x3 64->64 at 56^2, 3x3 128->128 at 28^2, 1x1
256->64 at 56^2, 3x3 512->512 at 7^2 (batch 32; the 512 layer also at 128) and LeNet's 5x5 1->6
at 28^2 and 5x5 6->16 at 14^2 (batch 256): the forward in "ieee" (simt), tf32 and bf16 (tensor
cores) against cuDNN through PyTorch in the same precision (TF32 off for "ieee"); conv + bias +
ReLU in one launch against cuDNN's convolution followed by a bias add and a ReLU; dgrad and wgrad
against torch.nn.grad.conv2d_input / conv2d_weight.  The numbers that count are the CUDA-event
medians in each benchmark's extra_info (ms, tflops, pct_of_ceiling, baseline_ms, ratio); see
dlgpu.bench.pytest_benchmark_case.  There is no CPU half: the CPU backend's convolution is
NumPy/numba, which these kernels are not compared with.
"""

from __future__ import annotations

import pytest

from dlgpu import bench

CASES = bench.cases_for(["conv2d"])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.id}-{case.label(case.shape_for('cuda', True))}")
def test_gpu(benchmark, case):
    bench.pytest_benchmark_case(benchmark, case, "cuda")
