"""pytest-benchmark for the conv2d stem: every benchmark of dlgpu/cases/conv2d.py.

    pytest benchmarks/bench_conv2d.py -m gpu --benchmark-json=out.json   # on a GPU
    pytest benchmarks/bench_conv2d.py -m "not gpu"                        # the CPU backend

What it times: ResNet-50 and LeNet layers, forward, bias + ReLU, dgrad and wgrad, against cuDNN (GPU
only).  The GPU numbers that count are the CUDA-event medians in each benchmark's extra_info
(dlgpu.bench.pytest_adapter says why).

Predicted on an H100 SXM before any GPU ran it (the records in benchmarks/results/ judge each
row; the reasoning, from the sm_90a SASS, is in
kernels/conv2d_tc.cu's header): the NHWC tensor-core forward (dlgpu/cuda/conv2d_nhwc.py, 16-bit operands by
cp.async) on ResNet-50's 3x3 layers at 250-400 TFLOP/s where C, K >= 128 (0.45-0.7x cuDNN), less at 64
channels; the NCHW tc kernels (fp32 arrays) stay at the 0.1-0.3x issue 16 predicted.  On an H100 the NHWC
16-bit forward (and the stride-1 dgrad) runs the wgmma kernels (kernels/conv2d_wgmma.cu, whose header has the
reasoning): the ``resnet50-3x3-*-nhwc-bf16`` rows (channels_last bf16 against cuDNN on channels_last bf16 tensors) at
250-350 TFLOP/s at 64 channels and 260-450 at 128 and up, fewer where the tiles do not fill two waves
(7x7x512 at batch 32): 0.45-0.75x cuDNN, L2 -> SM bandwidth the likely limit, short of issue 19's 0.9x; the
forward at 128 channels and up runs 2-CTA clusters sharing the weights (a quarter less L2 traffic): up to 0.9x
if L2 was the limit.  The
exact fp32 (ieee) simt kernels (kernels/conv2d.cu's header), bound by FFMA issue: forward 0.45-1.0x cuDNN on
ResNet-50's layers (0.3-0.8 at 7x7x512, batch 32), more with bias + ReLU (the baseline's two extra passes);
dgrad 0.2-0.8x, except conv1's at 0.005-0.05x (C = 3 fills 3 of 32 tile columns and stride 2 zeros 3 of 4
reduction terms); wgrad 0.3-0.7x (0.4-1.0 at conv1); the LeNet layers are launch-scale on both sides.

The ranges, row by row, are the cases' ``predicted`` (dlgpu/cases/conv2d.py); a GPU record and tools/perf_table.py
say of each row whether the run fell below, within or above its range.
"""

from dlgpu.bench.pytest_adapter import benchmark_tests

test_gpu, test_cpu = benchmark_tests("conv2d")
