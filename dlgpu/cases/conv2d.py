"""Cases of the conv2d stem (kernels/conv2d.cu, kernels/conv2d_tc.cu): 2-D convolution, forward and backward.

Checks: a 1x1 image, stride 2 with padding on a non-square prime plane,
stride 3 with dilation 2, and a 1x1 filter (plus 5x5 and 7x7 filters and a
16-channel layer outside quick mode), each with and without a fused ReLU and
with a bias; two grouped layers (2 groups, and depthwise with 2 filters a
channel) through dlgpu.ops.conv2d's per-group loop; the backward pass reads the
reference's forward output.  Tolerance: accumulating.

Benchmarks: ResNet-50 and LeNet layers, forward at ieee, tf32 and bf16, with
bias + ReLU fused, and both backward passes, against cuDNN through PyTorch (or
CuPy's cuDNN for the forward without PyTorch) in the same precision; ResNet-50's
3x3 layers in channels_last bf16 with bias + ReLU (the NHWC kernels: wgmma on
an H100) against cuDNN on channels_last bf16 tensors.  GPU only.  Beside these,
rows in other storages and layouts, each naming its storage dtype (``dtype``),
layout (``-nhwc`` / ``-nchw`` in the variant) and precision: the NHWC
(channels_last) kernels on ResNet-50's 3x3 layers and its first layer, forward
in fp32 at tf32 and in bf16 and fp16 storage, dgrad and wgrad in bf16; and
16-bit NCHW arrays through the backend (a transposing copy in, one out).
cuDNN runs on the same memory (channels_last tensors).

Predicted before any GPU ran it (H100 SXM, from the sm_90a build's SASS,
registers and occupancy).  The mma.sync NHWC kernels (kernels/conv2d_tc.cu's
header): the forward's 128x128 tile (228 registers, two blocks per SM, no
local memory; 289 instructions per 64 HMMA, bound by L2-to-SM traffic at 64
FLOP per byte) at 250-400 TFLOP/s in bf16/fp16 where C, K >= 128, i.e.
0.45-0.7x cuDNN, less at C = K = 64 (a 128x64 tile, 18 k-tiles); tf32 about
half of that; dgrad 0.3-0.5x cuDNN (a division per row and tap); wgrad ~90 %
issue efficiency.  On an H100 the 16-bit forward and the stride-1 dgrad run the
wgmma kernels instead (kernels/conv2d_wgmma.cu's header: 250-350 TFLOP/s at 64
channels, 260-450 at 128 and up, 350-550 on the forward's clustered 128x128c2
tile where L2 is the limit: 0.45-0.9x cuDNN); tf32 and wgrad stay on
mma.sync.  The 16-bit NCHW rows add two transposes (4 bytes per element of x
and y each) to the NHWC forward; the old NCHW tensor-core kernels (fp32
arrays) stay at 0.1-0.3x.
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import (STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, gpu_only, prod, randn,
                              storage_unavailable, torch_view, wgmma_only)
from dlgpu.ops.conv2d import grouped_conv2d, grouped_conv2d_backward
from dlgpu.testing import random_array
from dlgpu.window import output_size
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, ShapeError
from dlgpu.testing.bad_input import BadInput, FakeCupy, on_cpu, on_gpu, rand, w4, x4, y4

FAMILY = "conv2d"


def _check(n, c, h, w, k, r, s, stride, pad, dil, activation, groups=1, dtype=None) -> list[Check]:
    label = (f"{n}x{c}x{h}x{w} * {k}x{c // groups}x{r}x{s} s{stride} p{pad} d{dil}"
             + (f" g{groups}" if groups > 1 else "") + (" relu" if activation else ""))
    geometry = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
    pairs = ((stride, stride), (pad, pad), (dil, dil))

    def operands(rng, target):
        x = random_array(rng, (n, c, h, w), target.dtype)
        weight = random_array(rng, (k, c // groups, r, s), target.dtype)
        bias = random_array(rng, (k,), target.dtype)
        return x, weight, bias

    # Grouped convolution is the backend's ungrouped op once per group (dlgpu.ops.conv2d's loop).
    def run_forward(rng, target):
        x, weight, bias = operands(rng, target)
        ref_y = R.conv2d(x, weight, bias, activation=activation, **geometry)
        y = grouped_conv2d(target.backend, target.array(x), target.array(weight), target.array(bias), *pairs,
                           groups, activation, target.precision, target.poisoned(ref_y.shape))
        return [Output("y", y, ref_y, False)]

    def run_backward(rng, target):
        x, weight, bias = operands(rng, target)
        y_saved = R.conv2d(x, weight, bias, activation=activation, **geometry).astype(target.dtype)
        g = random_array(rng, y_saved.shape, target.dtype)
        grads = grouped_conv2d_backward(target.backend, target.array(g), target.array(x), target.array(weight),
                                        target.array(y_saved), *pairs, groups, activation, target.precision)
        refs = R.conv2d_backward(g, x, weight, y=y_saved, activation=activation, **geometry)
        return [Output(name, got, ref, False) for name, got, ref in zip(("grad_x", "grad_w", "grad_b"), grads, refs)]

    return [Check("conv2d", label, run_forward, dtype=dtype),
            Check("conv2d_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    #        N  C   H   W   K  R  S  stride pad dil
    configs = [
        (1, 1, 7, 7, 1, 3, 3, 1, 0, 1),
        (2, 3, 11, 13, 5, 3, 3, 2, 1, 1),
        (1, 2, 13, 13, 4, 3, 3, 3, 1, 2),
        (2, 5, 8, 8, 3, 1, 1, 1, 0, 1),
    ]
    if not quick:
        configs += [
            (2, 4, 9, 10, 3, 5, 5, 1, 2, 1),
            (1, 3, 15, 15, 4, 7, 7, 2, 3, 1),
            (3, 6, 14, 14, 16, 5, 5, 1, 0, 1),
        ]
    grouped = [  # N  C  H  W  K  R  S  stride pad dil groups: two groups, and depthwise with 2 filters a channel
        (2, 4, 9, 7, 6, 3, 3, 1, 1, 1, 2),
        (2, 3, 8, 9, 6, 3, 3, 2, 1, 1, 3),
    ]
    return ([check for config in configs for act in (None, "relu") for check in _check(*config, act)]
            + [check for *config, groups in grouped for check in _check(*config, "relu", groups)]
            # 16-bit storage: the strided, padded layer with a fused ReLU (C = 3: channels padded for the tensor
            # cores, the mask applied once in the backward), and a layer whose 16 channels the kernels read as
            # stored, K = 12 not a multiple of their 16-byte chunks, without an activation.
            + [check for dtype in STORAGE_DTYPES
               for config, act in ((configs[1], "relu"), ((2, 16, 7, 9, 12, 3, 3, 1, 1, 1), None))
               for check in _check(*config, act, dtype=dtype)])


# ---------------------------------------------------------------------------
# benchmarks: our kernels (dlgpu.cuda.conv2d, the default variant for the precision) against cuDNN
# ---------------------------------------------------------------------------

# The layers: (name, x (N, C, H, W), w (K, C, R, S), stride, padding).
LAYERS = (
    ("resnet50-conv1", (32, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    ("resnet50-3x3-64", (32, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("resnet50-3x3-128", (32, 128, 28, 28), (128, 128, 3, 3), 1, 1),
    ("resnet50-1x1-256", (32, 256, 56, 56), (64, 256, 1, 1), 1, 0),
    ("resnet50-3x3-512-b32", (32, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("resnet50-3x3-512-b128", (128, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("lenet-c1", (256, 1, 28, 28), (6, 1, 5, 5), 1, 0),
    ("lenet-c3", (256, 6, 14, 14), (16, 6, 5, 5), 1, 0),
)
NOT_ON_CPU = "GPU-only: dlgpu's convolution kernels against cuDNN (the CPU backend's is NumPy/numba)"
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _geometry(shape):
    """shape = (N, C, H, W, K, R, S, stride, padding) -> (x shape, w shape, y shape, stride, padding)."""
    n, c, h, w, k, r, s, stride, padding = shape
    p, q = output_size(h, r, stride, padding), output_size(w, s, stride, padding)
    return (n, c, h, w), (k, c, r, s), (n, k, p, q), stride, padding


def _inputs(xp, shape, seed):
    x_shape, w_shape, y_shape, _, _ = _geometry(shape)
    return {"x": randn(xp, x_shape, seed), "w": randn(xp, w_shape, seed + 1), "b": randn(xp, w_shape[:1], seed + 2),
            "grad_y": randn(xp, y_shape, seed + 3), "out": xp.empty(y_shape, dtype="float32"), "shape": shape}


def _dlgpu(pass_: str, precision: str):
    def run(d):
        from dlgpu.cuda import conv2d as conv

        _, w_shape, _, stride, padding = _geometry(d["shape"])
        geo = {"stride": (stride, stride), "padding": (padding, padding), "dilation": (1, 1), "precision": precision}
        if pass_ == "forward":
            return conv.forward(d["x"], d["w"], out=d["out"], **geo)
        if pass_ == "bias+relu":
            return F.conv2d(d["x"], d["w"], d["b"], stride=stride, padding=padding, activation="relu",
                            precision=precision)
        if pass_ == "dgrad":
            return conv.dgrad(d["grad_y"], d["w"], d["x"].shape, **geo)
        return conv.wgrad(d["grad_y"], d["x"], w_shape, **geo)

    return run


def _torch(pass_: str, precision: str):
    """cuDNN through PyTorch in the same precision: TF32 off for "ieee", on for "tf32", 16-bit tensors
    (cast once, before timing) for bf16/fp16.  bias+relu: convolution, then a separate bias add and ReLU."""

    def run(torch, d):
        _, w_shape, _, stride, padding = _geometry(d["shape"])
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        if "_t" not in d:
            dtype = getattr(torch, _TORCH_DTYPES.get(precision, "float32"))
            d["_t"] = {name: torch_view(torch, d[name]).to(dtype) for name in ("x", "w", "b", "grad_y")}
        t = d["_t"]
        if pass_ == "forward":
            return torch.nn.functional.conv2d(t["x"], t["w"], stride=stride, padding=padding)
        if pass_ == "bias+relu":
            y = torch.nn.functional.conv2d(t["x"], t["w"], stride=stride, padding=padding)
            y += t["b"][:, None, None]
            return y.relu_()
        if pass_ == "dgrad":
            return torch.nn.grad.conv2d_input(t["x"].shape, t["w"], t["grad_y"], stride=stride, padding=padding)
        return torch.nn.grad.conv2d_weight(t["x"], w_shape, t["grad_y"], stride=stride, padding=padding)

    return run


def _cupy(precision: str):
    """Where PyTorch is absent: the forward through CuPy's cuDNN wrapper (NCHW only; fp32 tensors, TF32 by
    tensor_core, or fp16 ones on tensor cores)."""

    def run(xp, d):
        from cupyx import cudnn

        _, _, _, stride, padding = _geometry(d["shape"])
        cudnn.convolution_forward(d["x"], d["w"], None, d["out"], (padding, padding), (stride, stride), (1, 1), 1,
                                  auto_tune=False, tensor_core="never" if precision == "ieee" else "always")
        return d["out"]

    return run


def _flops(shape) -> int:
    _, w_shape, y_shape, _, _ = _geometry(shape)
    return 2 * prod(y_shape) * prod(w_shape[1:])


def _bytes(shape) -> int:
    x_shape, w_shape, y_shape, _, _ = _geometry(shape)
    return f32(prod(x_shape) + prod(w_shape) + prod(y_shape))


def _label(shape) -> str:
    n, c, h, w, k, r, s, stride, padding = shape
    return f"{n}x{c}x{h}x{w} k{k} {r}x{s}/{stride} p{padding}"


# What the convolutions were predicted to reach on an H100 against cuDNN (through PyTorch), before any GPU ran
# them, by (pass, storage: "f32-nchw" for float32 NCHW arrays, else the 16-bit or tf32 rows' layout, precision,
# layer); the reasoning is in each kernel's header.  The 16-bit NHWC
# forward and stride-1 dgrad run the wgmma kernels there; fp32 NCHW arrays at tf32 the NCHW mma.sync kernels, at
# ieee the simt ones.  7x7x512 at batch 32 fills 52 of 132 SMs with 128x128 tiles: lower.  Rows not named here
# have no prediction (tests/test_bench.py lists them, and why).
_WGMMA, _TC, _SIMT = "kernels/conv2d_wgmma.cu", "kernels/conv2d_tc.cu", "kernels/conv2d.cu"
# The simt ranges (ratio to cuDNN at ieee, TF32 off), by pass and layer: FFMA issue share, the tile the launcher
# picks, waves; cuDNN's FP32 rate is the wider unknown.
_SIMT_SPANS = {
    "forward": {"resnet50-conv1": (0.5, 1.0), "resnet50-3x3-64": (0.5, 0.85), "resnet50-3x3-128": (0.45, 0.75),
                "resnet50-1x1-256": (0.5, 0.9), "resnet50-3x3-512-b32": (0.3, 0.8),
                "resnet50-3x3-512-b128": (0.5, 0.8), "lenet-c1": (0.3, 1.2), "lenet-c3": (0.4, 1.5)},
    # The baseline adds a bias pass and a ReLU pass over y; dlgpu fuses both into its one launch.
    "bias+relu": {"resnet50-conv1": (0.8, 1.6), "resnet50-3x3-64": (0.55, 0.95), "resnet50-3x3-128": (0.5, 0.85),
                  "resnet50-1x1-256": (0.7, 1.2), "resnet50-3x3-512-b32": (0.35, 0.85),
                  "resnet50-3x3-512-b128": (0.5, 0.8), "lenet-c1": (0.5, 2.0), "lenet-c3": (0.5, 2.0)},
    # conv1's dgrad: C = 3 fills 3 of a 32-wide tile and stride 2 makes 3 of 4 reduction terms zeros.
    "dgrad": {"resnet50-conv1": (0.005, 0.05), "resnet50-3x3-64": (0.4, 0.7), "resnet50-3x3-128": (0.4, 0.7),
              "resnet50-1x1-256": (0.45, 0.8), "resnet50-3x3-512-b32": (0.2, 0.5),
              "resnet50-3x3-512-b128": (0.4, 0.7), "lenet-c1": (0.08, 0.3), "lenet-c3": (0.08, 0.35)},
    "wgrad": {"resnet50-conv1": (0.4, 1.0), "resnet50-3x3-64": (0.3, 0.7), "resnet50-3x3-128": (0.3, 0.7),
              "resnet50-1x1-256": (0.3, 0.7), "resnet50-3x3-512-b32": (0.3, 0.7),
              "resnet50-3x3-512-b128": (0.3, 0.7), "lenet-c1": (0.2, 1.0), "lenet-c3": (0.2, 1.0)},
}
_PREDICTED = {
    **{("forward", "nhwc", p, layer): Prediction("ratio", *span, why=_WGMMA, baseline="torch")
       for p in ("bf16", "fp16")
       # K >= 128 runs the clustered 128x128c2 tile: the top rises by its L2 saving, the bottom stays (no gain
       # unless L2 was the limit).
       for layer, span in (("resnet50-3x3-64", (0.45, 0.75)), ("resnet50-3x3-128", (0.45, 0.9)),
                           ("resnet50-3x3-512-b32", (0.3, 0.7)), ("resnet50-3x3-512-b128", (0.45, 0.9)))},
    **{("dgrad", "nhwc", "bf16", layer): Prediction("ratio", *span, why=_WGMMA, baseline="torch")
       for layer, span in (("resnet50-3x3-64", (0.35, 0.6)), ("resnet50-3x3-128", (0.4, 0.7)),
                           ("resnet50-3x3-512-b32", (0.25, 0.55)), ("resnet50-3x3-512-b128", (0.4, 0.7)))},
    **{("forward", "f32-nchw", "tf32", layer): Prediction("ratio", 0.15, 0.45, why=_TC, baseline="torch")
       for layer in ("resnet50-3x3-64", "resnet50-3x3-128", "resnet50-3x3-512-b32", "resnet50-3x3-512-b128")},
    **{(pass_, "f32-nchw", "ieee", layer): Prediction("ratio", *span, why=_SIMT, baseline="torch")
       for pass_, spans in _SIMT_SPANS.items() for layer, span in spans.items()},
    # The rest of the tensor-core rows (kernels/conv2d_tc.cu's "Other rows" paragraph argues them).
    **{("forward", "f32-nchw", "tf32", layer): Prediction("ratio", *span, why=_TC, baseline="torch")
       for layer, span in (("resnet50-conv1", (0.25, 0.7)), ("resnet50-1x1-256", (0.65, 1.0)),
                           ("lenet-c1", (0.4, 1.5)), ("lenet-c3", (0.4, 1.5)))},
    **{("forward", "f32-nchw", "bf16", layer): Prediction("ratio", *span, why=_TC, baseline="torch")
       for layer, span in (("resnet50-conv1", (0.2, 0.45)), ("resnet50-3x3-64", (0.15, 0.35)),
                           ("resnet50-3x3-128", (0.15, 0.35)), ("resnet50-1x1-256", (0.35, 0.7)),
                           ("resnet50-3x3-512-b32", (0.1, 0.3)), ("resnet50-3x3-512-b128", (0.15, 0.35)),
                           ("lenet-c1", (0.4, 1.5)), ("lenet-c3", (0.4, 1.5)))},
    **{("forward", "nhwc", "tf32", layer): Prediction("ratio", *span, why=_TC, baseline="torch")
       for layer, span in (("resnet50-3x3-64", (0.4, 0.7)), ("resnet50-3x3-128", (0.4, 0.7)),
                           ("resnet50-3x3-512-b32", (0.3, 0.55)), ("resnet50-3x3-512-b128", (0.4, 0.7)),
                           ("resnet50-conv1", (0.2, 0.5)))},
    **{("wgrad", "nhwc", "bf16", layer): Prediction("ratio", 0.35, 0.65, why=_TC, baseline="torch")
       for layer in ("resnet50-3x3-64", "resnet50-3x3-128", "resnet50-3x3-512-b32", "resnet50-3x3-512-b128",
                     "resnet50-conv1")},
    **{(pass_, "nhwc", p, "resnet50-conv1"): Prediction("ratio", 0.2, 0.5, why=_TC, baseline="torch")
       for pass_, p in (("forward", "bf16"), ("forward", "fp16"), ("dgrad", "bf16"))},
    **{("forward", "nchw", p, layer): Prediction("ratio", 0.35, 0.7, why=_TC, baseline="torch")
       for p in ("bf16", "fp16") for layer in ("resnet50-3x3-128", "resnet50-3x3-512-b128")},
}


def _benchmark(layer, pass_: str, precision: str = "ieee") -> Benchmark:
    name, x_shape, w_shape, stride, padding = layer
    shape = (*x_shape, w_shape[0], *w_shape[2:], stride, padding)
    op = {"forward": "conv2d", "bias+relu": "conv2d", "dgrad": "conv2d_dgrad", "wgrad": "conv2d_wgrad"}[pass_]
    return Benchmark(
        family=FAMILY, op=op, variant=f"{name}-{precision}" + ("-bias+relu" if pass_ == "bias+relu" else ""),
        shapes={"gpu": shape, "cpu": shape, "cpu_quick": shape},
        make_inputs=_inputs, run=_dlgpu(pass_, precision), torch_baseline=_torch(pass_, precision),
        xp_baseline=_cupy(precision) if pass_ == "forward" and precision in ("ieee", "tf32") else None,
        bytes_moved=_bytes, flops=_flops, bound="compute", precision=precision,
        shape_label=_label, unavailable=gpu_only(NOT_ON_CPU),
        note="baseline: cuDNN through PyTorch (CuPy's cuDNN for the forward without PyTorch), same precision"
             + ("; dlgpu one launch, baseline convolution + bias add + ReLU" if pass_ == "bias+relu" else ""),
        predicted=_PREDICTED.get((pass_, "f32-nchw", precision, name)),
    )


# ResNet-50's 3x3 layers: the layers issues 16 and 19 set channels_last targets on.
NHWC_LAYERS = tuple(layer for layer in LAYERS if layer[0].startswith("resnet50-3x3"))


# The CPU backend's layers (issue 18's): few input channels with 5x5 filters, and a ResNet 3x3 layer, timed
# against PyTorch's CPU kernels where torch is installed (the reference otherwise), float32 only.
CPU_LAYERS = (
    ("lenet-c1", (64, 1, 28, 28), (6, 1, 5, 5), 1, 0),
    ("lenet-c3", (64, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    ("resnet-3x3-64", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1),
)
CPU_ONLY = "CPU-only: a CPU backend layer (the GPU rows time the convolution kernels one by one)"


def _cpu_run(pass_: str):
    def run(d):
        _, _, _, stride, padding = _geometry(d["shape"])
        if pass_ == "forward":
            return F.conv2d(d["x"], d["w"], d["b"], stride, padding, out=d["out"])
        return F.conv2d_backward(d["grad_y"], d["x"], d["w"], stride=stride, padding=padding)

    return run


def _cpu_torch(pass_: str):
    """PyTorch's CPU convolution: the forward with bias, or both gradients and the bias's in one call."""

    def run(torch, d):
        _, _, _, stride, padding = _geometry(d["shape"])
        t = d.setdefault("_t", {name: torch_view(torch, d[name]) for name in ("x", "w", "b", "grad_y")})
        if pass_ == "forward":
            return torch.nn.functional.conv2d(t["x"], t["w"], t["b"], stride=stride, padding=padding)
        return torch.ops.aten.convolution_backward(
            t["grad_y"], t["x"], t["w"], [t["w"].shape[0]], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [True, True, True])

    return run


def _cpu_reference(pass_: str):
    def run(d):
        _, _, _, stride, padding = _geometry(d["shape"])
        if pass_ == "forward":
            return R.conv2d(d["x"], d["w"], d["b"], stride=stride, padding=padding)
        return R.conv2d_backward(d["grad_y"], d["x"], d["w"], stride=stride, padding=padding)

    return run


def _cpu_benchmark(layer, pass_: str) -> Benchmark:
    name, x_shape, w_shape, stride, padding = layer
    shape = (*x_shape, w_shape[0], *w_shape[2:], stride, padding)
    quick = (min(shape[0], 4), *shape[1:])  # --quick: a few images of the same layer
    return Benchmark(
        family=FAMILY, op="conv2d" if pass_ == "forward" else "conv2d_backward", variant=f"{name}-cpu",
        shapes={"gpu": shape, "cpu": shape, "cpu_quick": quick},
        make_inputs=_inputs, run=_cpu_run(pass_), torch_baseline=_cpu_torch(pass_),
        reference=_cpu_reference(pass_), bytes_moved=_bytes, flops=lambda s: _flops(s) * (1 if pass_ == "forward" else 2),
        bound="compute", shape_label=_label, unavailable=lambda backend: None if backend == "cpu" else CPU_ONLY,
        note="dlgpu's CPU backend; baseline: PyTorch's CPU convolution (with bias; backward: all three gradients)",
    )


# ---------------------------------------------------------------------------
# benchmarks in the other memory formats and storages: the NHWC (channels_last) tensor-core kernels
# (dlgpu.cuda.conv2d_nhwc) on operands as stored, fp32 at tf32 and 16-bit at their own precision, and 16-bit
# NCHW arrays through the backend (one transposing copy each way around those kernels), against cuDNN in the
# same storage, layout and precision (PyTorch channels_last tensors; CuPy's cuDNN wrapper, NCHW only, for fp16).
# ---------------------------------------------------------------------------

# The 3x3 layers the NHWC kernels were written for, and the first layer (C = 3: channels padded by the producer
# pass).  16-bit NCHW rows on two of them show what the transposes cost.
STORED_LAYERS = (*NHWC_LAYERS, *(layer for layer in LAYERS if layer[0] == "resnet50-conv1"))
NCHW_16_LAYERS = tuple(layer for layer in LAYERS if layer[0] in ("resnet50-3x3-128", "resnet50-3x3-512-b128"))
_STORAGE = {"tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # each row's storage dtype by precision


def _stored_inputs(pass_: str, dtype, layout: str):
    """make_inputs for a pass, a storage dtype and a layout: the arrays the pass reads and the one it writes,
    stored NCHW / OIHW, or NHWC / KRSC (the channels_last storage; the arrays themselves, not views)."""

    def make(xp, shape, seed):
        x_shape, w_shape, y_shape, _, _ = _geometry(shape)
        if layout == "nhwc":
            x_shape, w_shape, y_shape = ((a, b, c, d) for a, d, b, c in (x_shape, w_shape, y_shape))
        reads = {"forward": ("x", "w"), "dgrad": ("grad_y", "w"), "wgrad": ("grad_y", "x")}[pass_]
        shapes = {"x": x_shape, "w": w_shape, "grad_y": y_shape}
        d = {name: randn(xp, shapes[name], seed + i, dtype) for i, name in enumerate(reads)}
        if pass_ != "wgrad":  # wgrad's float32 sums are the launcher's own
            d["out"] = xp.empty(y_shape if pass_ == "forward" else x_shape, dtype=dtype)
        return {**d, "shape": shape}

    return make


def _stored_run(pass_: str, precision: str, layout: str, config: str | None = None, kernels: str = "tc"):
    """The pass as the backend runs it, or (``config``) on one tile configuration of ``kernels``: "tc" (the
    mma.sync NHWC kernels) or "wgmma"."""

    def run(d):
        from dlgpu.cuda import conv2d as conv
        from dlgpu.cuda import conv2d_nhwc as nhwc
        from dlgpu.cuda import conv2d_wgmma as wgmma

        _, w_shape, _, stride, padding = _geometry(d["shape"])
        pairs = ((stride, stride), (padding, padding), (1, 1))
        if layout == "nchw":  # the backend's 16-bit path: transposes around the NHWC kernels
            return conv.conv2d(d["x"], d["w"], None, *pairs, None, precision, d["out"])
        geo = dict(zip(("stride", "padding", "dilation"), pairs), precision=precision)
        module = wgmma if config and kernels == "wgmma" else nhwc
        if pass_ == "forward":
            return module.forward(d["x"], d["w"], out=d["out"], config=config, **geo)
        if pass_ == "dgrad":
            return module.dgrad(d["grad_y"], d["w"], d["out"].shape, out=d["out"], config=config, **geo)
        k, c, r, s = w_shape  # fp32 grad_w, the master weights' gradient
        return nhwc.wgrad(d["grad_y"], d["x"], (k, r, s, c), **geo)

    return run


def _stored_torch(pass_: str, precision: str, layout: str):
    """cuDNN through PyTorch on the same memory: channels_last tensors for NHWC storage (permuted views, no
    copy), TF32 on for tf32."""

    def run(torch, d):
        x_shape, w_shape, _, stride, padding = _geometry(d["shape"])
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        t = {name: torch_view(torch, d[name]) for name in ("x", "w", "grad_y") if name in d}
        if layout == "nhwc":
            t = {name: v.permute(0, 3, 1, 2) for name, v in t.items()}
        if pass_ == "forward":
            return torch.nn.functional.conv2d(t["x"], t["w"], stride=stride, padding=padding)
        if pass_ == "dgrad":
            return torch.nn.grad.conv2d_input(x_shape, t["w"], t["grad_y"], stride=stride, padding=padding)
        return torch.nn.grad.conv2d_weight(t["x"], w_shape, t["grad_y"], stride=stride, padding=padding)

    return run


def _stored_benchmark(layer, pass_: str, precision: str, layout: str, config: str | None = None,
                      kernels: str = "tc") -> Benchmark:
    """A row naming its storage dtype (``dtype``), layout (the variant's "-nhwc" / "-nchw") and precision;
    with ``config``, a sweep row on that tile of ``kernels`` ("tc" or "wgmma"; "@kernels:config" in the
    variant, no prediction)."""
    name, x_shape, w_shape, stride, padding = layer
    shape = (*x_shape, w_shape[0], *w_shape[2:], stride, padding)
    dtype = _STORAGE[precision]
    op = {"forward": "conv2d", "dgrad": "conv2d_dgrad", "wgrad": "conv2d_wgrad"}[pass_]
    cupy_fp16 = layout == "nchw" and precision == "fp16" and pass_ == "forward"
    unavailable = gpu_only(NOT_ON_CPU) if dtype == "float32" else storage_unavailable(dtype)
    return Benchmark(
        family=FAMILY, op=op, variant=f"{name}-{layout}-{precision}" + (f"@{kernels}:{config}" if config else ""),
        dtype=dtype, precision=precision, shapes={"gpu": shape, "cpu": shape, "cpu_quick": shape},
        make_inputs=_stored_inputs(pass_, dtype, layout), run=_stored_run(pass_, precision, layout, config, kernels),
        torch_baseline=_stored_torch(pass_, precision, layout), xp_baseline=_cupy("fp16") if cupy_fp16 else None,
        bytes_moved=lambda s, size=np.dtype(dtype).itemsize: _bytes(s) // 4 * size, flops=_flops, bound="compute",
        shape_label=_label, unavailable=wgmma_only(NOT_ON_CPU) if kernels == "wgmma" and config else unavailable,
        note=f"{dtype} storage, {layout.upper()}, {precision}; baseline: cuDNN through PyTorch on the same memory"
             + (" (channels_last tensors)" if layout == "nhwc" else ""),
        predicted=None if config else _PREDICTED.get((pass_, layout, precision, name)),
    )


def _tile_names(kernels: str, pass_: str) -> list[str]:
    """The tile configurations of a pass, from the kernels' own lists."""
    if kernels == "wgmma":
        from dlgpu.cuda.conv2d_wgmma import PASS_CONFIGS

        return [config.name for config in PASS_CONFIGS[pass_]]
    from dlgpu.cuda.conv2d_nhwc import CONFIGS

    return [config.name for config in CONFIGS]


BENCHMARKS = (
    *(_cpu_benchmark(layer, pass_) for pass_ in ("forward", "backward") for layer in CPU_LAYERS),
    *(_benchmark(layer, "forward", p) for p in ("ieee", "tf32", "bf16") for layer in LAYERS),
    *(_benchmark(layer, "bias+relu") for layer in LAYERS),
    *(_benchmark(layer, pass_) for pass_ in ("dgrad", "wgrad") for layer in LAYERS),
    *(_stored_benchmark(layer, "forward", p, "nhwc") for p in ("tf32", "bf16", "fp16") for layer in STORED_LAYERS),
    *(_stored_benchmark(layer, pass_, "bf16", "nhwc") for pass_ in ("dgrad", "wgrad") for layer in STORED_LAYERS),
    *(_stored_benchmark(layer, "forward", p, "nchw") for p in ("bf16", "fp16") for layer in NCHW_16_LAYERS),
)

# The sweep (``dlgpu bench --sweep``): the channels_last rows of the open targets once per tile configuration,
# so that one GPU run says which tile each layer wants (the first H100 record: the wgmma forward at 0.43-0.71x
# cuDNN in 16 bits against issue 19's 0.9, tf32 on the mma.sync tiles at 0.23-0.47x against issue 16's 0.6).
SWEEP = (
    *(_stored_benchmark(layer, "forward", p, "nhwc", config, "wgmma") for p in ("bf16", "fp16")
      for layer in NHWC_LAYERS for config in _tile_names("wgmma", "forward")),
    *(_stored_benchmark(layer, "dgrad", "bf16", "nhwc", config, "wgmma") for layer in NHWC_LAYERS
      for config in _tile_names("wgmma", "dgrad")),
    *(_stored_benchmark(layer, "forward", "tf32", "nhwc", config) for layer in NHWC_LAYERS
      for config in _tile_names("tc", "forward")),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("conv-rank", lambda w: F.conv2d(w(rand(3, 8, 8)), w(w4)), ShapeError, "conv2d: x must be 4-D"),
        BadInput("conv-backward-grad-rank", lambda w: F.conv2d_backward(w(rand(2, 4, 36)), w(x4), w(w4)),
                 ShapeError, "grad_y must be 4-D"),
        BadInput("conv-channels", lambda w: F.conv2d(w(x4), w(rand(4, 5, 3, 3))), ShapeError, "x has 3 channels"),
        BadInput("conv-backward-grad", lambda w: F.conv2d_backward(w(rand(2, 4, 5, 5)), w(x4), w(w4)),
                 ShapeError, "expected (2, 4, 6, 6)"),
        BadInput("conv-empty-height", lambda w: F.conv2d(w(rand(2, 3, 0, 8)), w(w4), padding=2),
                 ShapeError, "only the batch (first) dimension may be 0"),
        BadInput("conv-groups-divide", lambda w: F.conv2d(w(x4), w(rand(4, 1, 3, 3)), groups=2),
                 ShapeError, "groups=2 must divide the input channels (3)"),
        BadInput("conv-groups-weight", lambda w: F.conv2d(w(rand(2, 4, 8, 8)), w(rand(4, 4, 3, 3)), groups=2),
                 ShapeError, "weight.shape[1] must be 4 // groups = 2"),
        BadInput("conv-groups-zero", lambda w: F.conv2d(w(x4), w(w4), groups=0),
                 ArgumentError, "groups must be a positive int"),
        BadInput("conv-backward-groups", lambda w: F.conv2d_backward(w(y4), w(x4), w(w4), groups=3),
                 ShapeError, "conv2d_backward: groups=3 must divide the input channels (3) and the output channels (4)"),
        BadInput("conv-same-strided", lambda w: F.conv2d(w(x4), w(w4), None, 2, "same"),
                 ArgumentError, "padding='same' needs stride 1"),
        BadInput("conv-same-even-kernel", lambda w: F.conv2d(w(x4), w(rand(4, 3, 2, 2)), padding="same"),
                 ArgumentError, "pads unevenly"),
        BadInput("conv-padding-word", lambda w: F.conv2d(w(x4), w(w4), padding="full"),
                 ArgumentError, "padding must be an int, a pair, 'valid' or 'same'"),
        BadInput("conv-stride-zero", lambda w: F.conv2d(w(x4), w(w4), stride=(1, 0)),
                 ArgumentError, "stride must be >= 1"),
        BadInput("conv-padding-negative", lambda w: F.conv2d(w(x4), w(w4), padding=(-1, 0)),
                 ArgumentError, "padding must be >= 0"),
        BadInput("conv-dilated-kernel-too-large", lambda w: F.conv2d(w(x4), w(w4), dilation=4),
                 ArgumentError, "larger than the padded input"),
        BadInput("conv-backward-stride-negative", lambda w: F.conv2d_backward(w(y4), w(x4), w(w4), stride=-1),
                 ArgumentError, "stride must be >= 1"),
        BadInput("conv-backward-relu-needs-y", lambda w: F.conv2d_backward(w(y4), w(x4), w(w4), activation="relu"),
                 ArgumentError, "needs y"),
        BadInput("conv-bias-mixed", lambda w: F.conv2d(w(x4), w(w4), w(rand(4, dtype=np.float64))),
                 DtypeError, "must share one dtype"),
        BadInput("out-shape", lambda w: F.conv2d(w(x4), w(w4), out=w(rand(2, 4, 6, 5))), ShapeError, "out has shape"),
        on_gpu("mix-conv-weight", lambda: F.conv2d(FakeCupy(x4), w4), DeviceError, "weight is numpy"),
        on_gpu("mix-conv-backward-y",
               lambda: F.conv2d_backward(FakeCupy(y4), FakeCupy(x4), FakeCupy(w4), y=y4, activation="relu"),
               DeviceError, "y is numpy"),
        on_cpu("conv-rank", lambda: F.conv2d(rand(3, 8, 8), w4), ShapeError, "conv2d: x must be 4-D"),
        on_cpu("conv-weight-rank", lambda: F.conv2d(x4, rand(4, 3, 3)), ShapeError, "weight must be 4-D"),
        on_cpu("conv-channels", lambda: F.conv2d(x4, rand(4, 2, 3, 3)), ShapeError, "x has 3 channels"),
        on_cpu("conv-bias", lambda: F.conv2d(x4, w4, rand(5)), ShapeError, "bias has 5 elements"),
        on_cpu("conv-backward-grad", lambda: F.conv2d_backward(rand(2, 4, 5, 5), x4, w4),
               ShapeError, "expected (2, 4, 6, 6)"),
        on_cpu("stride-zero", lambda: F.conv2d(x4, w4, stride=0), ArgumentError, "stride must be >= 1"),
        on_cpu("padding-negative", lambda: F.conv2d(x4, w4, padding=-1), ArgumentError, "padding must be >= 0"),
        on_cpu("dilation-zero", lambda: F.conv2d(x4, w4, dilation=0), ArgumentError, "dilation must be >= 1"),
        on_cpu("stride-float", lambda: F.conv2d(x4, w4, stride=1.5), ArgumentError, "stride must be an int"),
        on_cpu("stride-triple", lambda: F.conv2d(x4, w4, stride=(1, 1, 1)), ArgumentError, "pair"),
        on_cpu("kernel-too-large", lambda: F.conv2d(x4, rand(4, 3, 11, 3)),
               ArgumentError, "larger than the padded input"),
        # (2, 4, 2**21 + 6, 2**21 + 6) float32: 128 TiB, refused before numba or NumPy try to allocate it
        on_cpu("conv-too-large", lambda: F.conv2d(x4, w4, padding=2**20), ShapeError, "more than the"),
    ]
