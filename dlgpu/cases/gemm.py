"""Cases of the gemm stem (kernels/gemm.cu, kernels/gemm_tc.cu): matmul and linear, forward and backward.

Checks: products of sizes 1, primes and 2^k +- 1 in all four layouts (each
with its backward pass), and linear layers with and without bias and fused
ReLU; the ReLU backward reads the reference's forward output.  Tolerance:
accumulating (the products sum K roundings).

Benchmarks: our kernels (a variant forced) against cublasGemmEx in the same
precision at 4096^3 and 8192^3; linear with bias + ReLU in one launch against
cuBLAS followed by CuPy's bias add and ReLU; two small products of small
networks.  GPU only (the CPU backend's product is numba's tiled one).
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import (STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, gpu_only, randn,
                             wgmma_only)
from dlgpu.testing import random_array
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, LayoutError, ShapeError
from dlgpu.testing.bad_input import (
    BadInput,
    FakeCupy,
    FakeDlpack,
    FakeGpuTensor,
    a2,
    b2,
    buffer,
    on_cpu,
    on_gpu,
    rand,
    readonly,
)

FAMILY = "gemm"


def _matmul_check(m: int, n: int, k: int, transpose_a: bool, transpose_b: bool, dtype=None) -> list[Check]:
    label = f"{m}x{n}x{k} " + ("T" if transpose_a else "N") + ("T" if transpose_b else "N")

    def operands(rng, target):
        a = random_array(rng, (k, m) if transpose_a else (m, k), target.dtype)
        b = random_array(rng, (n, k) if transpose_b else (k, n), target.dtype)
        return a, b

    def run_forward(rng, target):
        a, b = operands(rng, target)
        c = target.backend.matmul(target.array(a), target.array(b), transpose_a, transpose_b, target.precision,
                                  target.poisoned((m, n)))
        return [Output("c", c, R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), False)]

    def run_backward(rng, target):
        a, b = operands(rng, target)
        g = random_array(rng, (m, n), target.dtype)
        grads = target.backend.matmul_backward(target.array(g), target.array(a), target.array(b), transpose_a,
                                               transpose_b, target.precision)
        refs = R.matmul_backward(g, a, b, transpose_a=transpose_a, transpose_b=transpose_b)
        return [Output(name, got, ref, False) for name, got, ref in zip(("grad_a", "grad_b"), grads, refs)]

    return [Check("matmul", label, run_forward, dtype=dtype),
            Check("matmul_backward", label, run_backward, dtype=dtype)]


def _linear_check(batch: int, features_in: int, features_out: int, bias: bool, activation,
                  dtype=None) -> list[Check]:
    label = f"{batch}x{features_in}->{features_out}" + (" +bias" if bias else "") + (" relu" if activation else "")

    def operands(rng, target):
        x = random_array(rng, (batch, features_in), target.dtype)
        w = random_array(rng, (features_out, features_in), target.dtype)
        b = random_array(rng, (features_out,), target.dtype) if bias else None
        return x, w, b

    def run_forward(rng, target):
        x, w, b = operands(rng, target)
        y = target.backend.linear(target.array(x), target.array(w), None if b is None else target.array(b),
                                  activation, target.precision, target.poisoned((batch, features_out)))
        return [Output("y", y, R.linear(x, w, b, activation=activation), False)]

    def run_backward(rng, target):
        x, w, b = operands(rng, target)
        g = random_array(rng, (batch, features_out), target.dtype)
        y_saved = R.linear(x, w, b, activation=activation).astype(target.dtype)
        grads = target.backend.linear_backward(target.array(g), target.array(x), target.array(w),
                                               target.array(y_saved), activation, target.precision)
        refs = R.linear_backward(g, x, w, y=y_saved, activation=activation)
        return [Output(name, got, ref, False) for name, got, ref in zip(("grad_x", "grad_w", "grad_b"), grads, refs)]

    return [Check("linear", label, run_forward, dtype=dtype),
            Check("linear_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    products = [(1, 1, 1), (7, 13, 5), (33, 65, 31)] + ([] if quick else [(64, 64, 64), (127, 1, 67), (1, 257, 3)])
    layers = [(1, 1, 1), (5, 13, 7), (33, 31, 65)] + ([] if quick else [(64, 784, 10)])
    flags = (False, True)
    return [
        *(c for m, n, k in products for ta in flags for tb in flags for c in _matmul_check(m, n, k, ta, tb)),
        *(c for size in layers for bias in flags for act in (None, "relu") for c in _linear_check(*size, bias, act)),
        # 16-bit storage: one odd product in two layouts, one layer with bias and ReLU.
        *(c for dtype in STORAGE_DTYPES for ta, tb in ((False, False), (True, True))
          for c in _matmul_check(33, 65, 31, ta, tb, dtype)),
        *(c for dtype in STORAGE_DTYPES for c in _linear_check(5, 13, 7, True, "relu", dtype)),
    ]


# ---------------------------------------------------------------------------
# benchmarks: our kernels (dlgpu.cuda.gemm, a variant forced) against cuBLAS through CuPy
# ---------------------------------------------------------------------------

# cuBLAS's enums (cublas_api.h, library_types.h), for cublasGemmEx through cupy.cuda.cublas.
_CUBLAS_OP_N, _CUBLAS_OP_T = 0, 1
_CUDA_R_32F, _CUDA_R_16F, _CUDA_R_16BF = 0, 2, 14
_CUBLAS_COMPUTE_32F, _CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
_CUBLAS_GEMM_DEFAULT = -1
# Per precision: the cuBLAS operand type and compute type of the same arithmetic as ours.
_CUBLAS_MODES = {
    "ieee": (_CUDA_R_32F, _CUBLAS_COMPUTE_32F),  # SGEMM, TF32 off
    "tf32": (_CUDA_R_32F, _CUBLAS_COMPUTE_32F_FAST_TF32),
    "bf16": (_CUDA_R_16BF, _CUBLAS_COMPUTE_32F),  # 16-bit operands, fp32 accumulate and output
    "fp16": (_CUDA_R_16F, _CUBLAS_COMPUTE_32F),
}
NOT_ON_CPU = "GPU-only: dlgpu's GEMM kernels against cuBLAS (the CPU backend's product is NumPy's)"
# The CPU shapes only size the (skipped) CPU rows' inputs.
_CPU_SHAPE = (512, 512, 512)


def cublas_gemm(a, b, out, precision: str, transpose_b: bool = False):
    """out (M, N) fp32 = a (M, K) @ op(b) by cublasGemmEx in ``precision``; row-major arrays.

    Row-major C = A op(B) is column-major C^T = op(B)^T A^T: B's buffer goes first.
    """
    from cupy.cuda import cublas, device, stream

    data_type, compute_type = _CUBLAS_MODES[precision]
    m, k = a.shape
    n = out.shape[1]
    handle = device.get_cublas_handle()
    cublas.setStream(handle, stream.get_current_stream().ptr)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    cublas.gemmEx(handle, _CUBLAS_OP_T if transpose_b else _CUBLAS_OP_N, _CUBLAS_OP_N, n, m, k, one.ctypes.data,
                  b.data.ptr, data_type, k if transpose_b else n, a.data.ptr, data_type, k, zero.ctypes.data,
                  out.data.ptr, _CUDA_R_32F, n, compute_type, _CUBLAS_GEMM_DEFAULT)
    return out


def to_16bit(xp, array, precision: str):
    """The operand cuBLAS reads in a 16-bit mode: fp16, or bf16 bits (round to nearest even) as uint16."""
    if precision == "fp16":
        return array.astype(xp.float16)
    bits = array.view(xp.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(xp.uint16)


def _gemm_inputs(precision: str, transpose_b: bool = False):
    def make(xp, shape, seed):
        m, n, k = shape
        d = {"a": randn(xp, (m, k), seed), "b": randn(xp, (n, k) if transpose_b else (k, n), seed + 1)}
        d["out"] = xp.empty((m, n), dtype=np.float32)
        if precision in ("bf16", "fp16"):  # cast once here: cuBLAS is timed on 16-bit operands
            d["a16"], d["b16"] = to_16bit(xp, d["a"], precision), to_16bit(xp, d["b"], precision)
        return d

    return make


def _operands(d, precision: str):
    """The operands both sides read: the 16-bit copies at bf16 / fp16 (read in place: no producer pass)."""
    return (d["a16"], d["b16"]) if precision in ("bf16", "fp16") else (d["a"], d["b"])


def _gemm_baseline(precision: str, transpose_b: bool = False):
    def run(xp, d):
        return cublas_gemm(*_operands(d, precision), d["out"], precision, transpose_b=transpose_b)

    return run


def _gemm_run(variant: str, precision: str, transpose_b: bool = False, config: str | None = None):
    def run(d):
        from dlgpu.cuda.gemm import gemm

        return gemm(*_operands(d, precision), transpose_b=transpose_b, precision=precision, variant=variant,
                    out=d["out"], config=config)

    return run


def _flops(shape) -> int:
    m, n, k = shape
    return 2 * m * n * k


def _label(shape) -> str:
    return "x".join(str(s) for s in shape)


# What the tensor-core products were predicted to reach on an H100 against cuBLAS (through CuPy), before any GPU
# ran them; the reasoning (SASS counts, registers, occupancy, bytes per k-tile) is in each kernel's header.
_PREDICTED = {
    ("tc", "bf16"): Prediction("ratio", 0.5, 0.65, why="kernels/gemm_tc.cu", baseline="cupy"),
    ("tc", "fp16"): Prediction("ratio", 0.5, 0.65, why="kernels/gemm_tc.cu", baseline="cupy"),
    ("tc", "tf32"): Prediction("ratio", 0.45, 0.65, why="kernels/gemm_tc.cu", baseline="cupy"),
    ("wgmma", "bf16"): Prediction("ratio", 0.8, 0.95, why="kernels/gemm_wgmma.cu", baseline="cupy"),
    ("wgmma", "fp16"): Prediction("ratio", 0.8, 0.95, why="kernels/gemm_wgmma.cu", baseline="cupy"),
    ("wgmma", "tf32"): Prediction("ratio", 0.75, 0.9, why="kernels/gemm_wgmma.cu", baseline="cupy"),
}
# The exact fp32 (simt) rows by (op, shape): kernels/gemm.cu's header argues them.  Large products are bound by
# FFMA issue (80 % of the loop's instructions); the small ones run on 4-32 of 132 SMs (no tile gives every SM a
# block), and linear's baseline adds a bias pass and a ReLU pass.
_PREDICTED_SIMT = {
    (op, shape): Prediction("ratio", *span, why="kernels/gemm.cu", baseline="cupy")
    for op, shape, span in (("matmul", (4096, 4096, 4096), (0.65, 0.9)), ("matmul", (8192, 8192, 8192), (0.65, 0.9)),
                            ("matmul", (256, 64, 576), (0.08, 0.26)), ("matmul", (128, 512, 784), (0.08, 0.26)),
                            ("linear", (4096, 4096, 4096), (0.67, 0.95)), ("linear", (256, 512, 784), (0.15, 0.45)))
}


def _gemm_benchmark(shape, variant: str, precision: str = "ieee", transpose_b: bool = False,
                    config: str | None = None) -> Benchmark:
    """A product at ``shape`` (M, N, K) on one variant; ``transpose_b``: b stored (N, K) (layout nt, the one
    wgmma reads tf32 in), cuBLAS likewise; ``config`` forces a tile configuration (a sweep row: no prediction)."""
    m, n, k = shape
    return Benchmark(
        family=FAMILY, op="matmul",
        variant=(f"{variant}-{precision}" if variant in ("tc", "wgmma") else variant) + ("-nt" if transpose_b else "")
        + (f"@{config}" if config else ""),
        shapes={"gpu": shape, "cpu": _CPU_SHAPE, "cpu_quick": _CPU_SHAPE},  # M x N x K
        make_inputs=_gemm_inputs(precision, transpose_b), run=_gemm_run(variant, precision, transpose_b, config),
        xp_baseline=_gemm_baseline(precision, transpose_b),
        bytes_moved=lambda s: f32(s[0] * s[2] + s[2] * s[1] + s[0] * s[1]), flops=_flops, bound="compute",
        precision=precision, shape_label=_label,
        unavailable=wgmma_only(NOT_ON_CPU) if variant == "wgmma" else gpu_only(NOT_ON_CPU),
        note="baseline: cublasGemmEx through CuPy in the same precision (16-bit operands cast beforehand, "
             "for both)",
        predicted=None if config else (_PREDICTED_SIMT.get(("matmul", shape)) if variant == "simt"
                                       else _PREDICTED.get((variant, precision))),
    )


def _linear_inputs(xp, shape, seed):
    batch, features_out, features_in = shape
    return {"x": randn(xp, (batch, features_in), seed), "w": randn(xp, (features_out, features_in), seed + 1),
            "bias": randn(xp, (features_out,), seed + 2), "out": xp.empty((batch, features_out), dtype=np.float32)}


def _linear_baseline(xp, d):
    """cuBLAS SGEMM (x @ w.T), then CuPy's bias add and ReLU: three launches."""
    y = cublas_gemm(d["x"], d["w"], d["out"], "ieee", transpose_b=True)
    y += d["bias"]
    return xp.maximum(y, 0, out=y)


def _linear_benchmark(shape) -> Benchmark:
    return Benchmark(
        family=FAMILY, op="linear", variant="bias+relu",
        # (batch, out_features, in_features): M x N x K of the product.
        shapes={"gpu": shape, "cpu": _CPU_SHAPE, "cpu_quick": _CPU_SHAPE},
        make_inputs=_linear_inputs,
        run=lambda d: F.linear(d["x"], d["w"], d["bias"], activation="relu", out=d["out"]),
        xp_baseline=_linear_baseline,
        bytes_moved=lambda s: f32(s[0] * s[2] + s[1] * s[2] + s[1] + s[0] * s[1]),
        flops=_flops, bound="compute", shape_label=_label, unavailable=gpu_only(NOT_ON_CPU),
        note="dlgpu: one launch (bias and ReLU in the epilogue); baseline: cuBLAS SGEMM + CuPy bias add + ReLU",
        predicted=_PREDICTED_SIMT.get(("linear", shape)),
    )


BENCHMARKS = (
    *(_gemm_benchmark((n, n, n), "simt") for n in (4096, 8192)),
    *(_gemm_benchmark((n, n, n), "tc", p) for p in ("tf32", "bf16", "fp16") for n in (4096, 8192)),
    # Hopper's warpgroup MMA (compute capability 9.0 only; elsewhere the rows say why they cannot run).
    *(_gemm_benchmark((n, n, n), "wgmma", p) for p in ("bf16", "fp16") for n in (4096, 8192)),
    *(_gemm_benchmark((n, n, n), "wgmma", "tf32", transpose_b=True) for n in (4096, 8192)),
    _linear_benchmark((4096, 4096, 4096)),
    _linear_benchmark((256, 512, 784)),
    # Small networks' shapes: launch count and occupancy matter more than FLOPs.
    _gemm_benchmark((256, 64, 576), "simt"),
    _gemm_benchmark((128, 512, 784), "simt"),
)


def _gemm_configs(variant: str):
    from dlgpu.cuda.gemm import CONFIGS  # the kernels' own lists (read from kernels/*.cu)

    return CONFIGS[variant]


# The sweep (``dlgpu bench --sweep``): the wgmma rows above once per tile configuration, so that one GPU run
# says which tile each target shape wants (issue 19's 4096^3 rows missed: fp16 0.87x, tf32 0.95x cuBLAS).
SWEEP = tuple(
    _gemm_benchmark((n, n, n), "wgmma", p, transpose_b=p == "tf32", config=config.name)
    for p in ("bf16", "fp16", "tf32") for n in (4096, 8192) for config in _gemm_configs("wgmma")
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("matmul-rank", lambda w: F.matmul(w(rand(5)), w(b2)), ShapeError, "matmul: a must be 2-D"),
        BadInput("matmul-backward-rank", lambda w: F.matmul_backward(w(rand(5, 3, 1)), w(a2), w(b2)),
                 ShapeError, "grad_c must be 2-D"),
        BadInput("linear-weight-rank", lambda w: F.linear(w(a2), w(rand(7))), ShapeError, "weight must be 2-D"),
        BadInput("matmul-inner", lambda w: F.matmul(w(a2), w(rand(6, 3))), ShapeError, "inner dimensions differ"),
        BadInput("matmul-backward-grad", lambda w: F.matmul_backward(w(rand(3, 5)), w(a2), w(b2)),
                 ShapeError, "grad_c has shape (3, 5)"),
        BadInput("linear-bias", lambda w: F.linear(w(a2), w(rand(3, 7)), w(rand(4))),
                 ShapeError, "bias has 4 elements"),
        BadInput("linear-backward-y",
                 lambda w: F.linear_backward(w(rand(5, 3)), w(a2), w(rand(3, 7)), y=w(rand(3, 5)), activation="relu"),
                 ShapeError, "y has shape (3, 5)"),
        BadInput("linear-no-features", lambda w: F.linear(w(rand(5, 0)), w(rand(3, 0))),
                 ShapeError, "only the leading (batch) dimensions of x may be 0"),
        BadInput("linear-activation", lambda w: F.linear(w(a2), w(rand(3, 7)), activation="tanh"),
                 ArgumentError, "'tanh'"),
        BadInput("matmul-precision", lambda w: F.matmul(w(a2), w(b2), precision="int8"), ArgumentError, "'int8'"),
        BadInput("matmul-int", lambda w: F.matmul(w(np.ones((5, 7), np.int32)), w(b2)), DtypeError, "floating dtype"),
        BadInput("out-dtype", lambda w: F.linear(w(a2), w(rand(3, 7)), out=w(rand(5, 3, dtype=np.float64))),
                 DtypeError, "out has dtype float64"),
        BadInput("out-aliases-input", lambda w: F.matmul(w(buffer), w(rand(7, 7)), out=w(buffer)),
                 LayoutError, "out overlaps input a"),
        BadInput("out-aliases-weight",
                 lambda w: F.linear(w(rand(7, 7)), w(buffer[:3]), out=w(buffer.ravel()[14:35].reshape(7, 3))),
                 LayoutError, "out overlaps input weight"),
        on_cpu("cpu-not-an-array", lambda: F.matmul(a2, ((1.0,),)), DtypeError, "must be a NumPy or CuPy array"),
        on_gpu("gpu-different-devices", lambda: F.matmul(FakeCupy(a2, 0), FakeCupy(b2, 1)),
               DeviceError, "different GPUs (a on GPU 0, b on GPU 1)"),
        on_gpu("mix-matmul", lambda: F.matmul(a2, FakeCupy(b2)), DeviceError, "must all be NumPy or all CuPy"),
        on_gpu("mix-linear-bias", lambda: F.linear(FakeCupy(a2), FakeCupy(rand(3, 7)), rand(3)),
               DeviceError, "bias is numpy"),
        on_gpu("mix-dlpack-gpu-and-numpy", lambda: F.matmul(FakeDlpack(2, 0), a2),
               DeviceError, "must all be on the CPU or all on one GPU"),
        on_gpu("dlpack-different-gpus", lambda: F.matmul(FakeDlpack(2, 0), FakeDlpack(2, 1)),
               DeviceError, "different GPUs (a on GPU 0, b on GPU 1)"),
        on_cpu("matmul-rank", lambda: F.matmul(rand(5), b2), ShapeError, "matmul: a must be 2-D"),
        on_cpu("linear-scalar", lambda: F.linear(np.float32(1.0), rand(5, 4)), DtypeError, "linear: x is a NumPy scalar"),
        on_cpu("linear-0d", lambda: F.linear(rand(), rand(5, 4)), ShapeError, "x must have at least 1 dimension"),
        # (2**40, 1) @ (1, 2**40) in float32 is 4 EiB: refused before NumPy tries to allocate it
        on_cpu("matmul-too-large",
               lambda: F.matmul(np.lib.stride_tricks.as_strided(rand(1, 1), (2**40, 1), (0, 4)),
                                np.lib.stride_tricks.as_strided(rand(1, 1), (1, 2**40), (4, 0))),
               ShapeError, "more than the"),
        on_cpu("matmul-inner", lambda: F.matmul(a2, rand(6, 3)), ShapeError, "inner dimensions differ"),
        on_cpu("matmul-transpose-inner", lambda: F.matmul(a2, b2, transpose_b=True), ShapeError, "transpose_b=True"),
        on_cpu("linear-features", lambda: F.linear(rand(2, 4), rand(5, 3)), ShapeError, "x has 4 features"),
        on_cpu("linear-backward-grad", lambda: F.linear_backward(rand(2, 4), rand(2, 3), rand(5, 3)),
               ShapeError, "grad_y has shape (2, 4)"),
        on_cpu("activation-unknown", lambda: F.linear(a2, rand(3, 7), activation="gelu"), ArgumentError, "'gelu'"),
        on_cpu("relu-backward-needs-y", lambda: F.linear_backward(rand(5, 3), a2, rand(3, 7), activation="relu"),
               ArgumentError, "needs y"),
        on_cpu("transpose-flag-type", lambda: F.matmul(a2, b2, transpose_a="yes"),
               ArgumentError, "transpose_a must be a bool"),
        on_cpu("precision-unknown", lambda: F.matmul(a2, b2, precision="fp8"), ArgumentError, "'fp8'"),
        on_cpu("mixed-dtypes", lambda: F.matmul(a2, b2.astype(np.float64)), DtypeError, "must share one dtype"),
        on_cpu("foreign-gpu-tensor-with-host-array", lambda: F.matmul(FakeGpuTensor(), a2),
               DeviceError, "must all be on the CPU or all on one GPU"),
        on_cpu("out-non-contiguous", lambda: F.matmul(a2, b2, out=np.empty((3, 5), np.float32).T),
               LayoutError, "out is not C-contiguous"),
        on_cpu("out-shape", lambda: F.matmul(a2, b2, out=np.empty((3, 5), np.float32)),
               ShapeError, "out has shape (3, 5)"),
        on_cpu("out-readonly", lambda: F.matmul(a2, b2, out=readonly(5, 3)), LayoutError, "read-only"),
        on_cpu("out-aliases-input", lambda: F.matmul(buffer, rand(7, 7), out=buffer), LayoutError, "overlaps input a"),
    ]
