"""Cases of the pool stem (kernels/pool.cu): max pooling with argmax, and its backward.

Checks: overlapping 3x3/2 windows with padding on an odd plane, 2x2/2 without,
and 3x3/1 (every input in several windows), plus a 56x56 layer outside quick
mode.  argmax must match the reference exactly; y and the routed gradient
elementwise.  The backward pass routes a gradient through the reference's
argmax, so it is checked on its own.

Benchmarks: 3x3 stride 2 padding 1 on 64 x 64 x 56 x 56 (ResNet's stem
pooling), against nine strided maxima in CuPy or NumPy, PyTorch's
max_pool2d_with_indices on the GPU, and the reference on the CPU.  Each
carries the share of the copy bandwidth predicted for an H100 before any GPU
ran it (``predicted``; kernels/pool.cu's header has the reasoning: the
forward is bound by memory, the backward still by instruction issue).
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases.case import STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, prod, randn, torch_view
from dlgpu.testing import random_array, to_numpy
from dlgpu.window import output_size
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, ShapeError
from dlgpu.testing.bad_input import BadInput, FakeCupy, argmax, in_debug_mode, on_cpu, on_gpu, rand, x4

FAMILY = "pool"


def _check(shape: tuple, kernel: int, stride: int, padding: int, dtype=None) -> list[Check]:
    label = f"{'x'.join(map(str, shape))} k{kernel} s{stride} p{padding}"
    window = ((kernel, kernel), (stride, stride), (padding, padding))

    def run_forward(rng, target):
        x = random_array(rng, shape, target.dtype)
        y, argmax = target.backend.max_pool2d(target.array(x), *window)
        ref_y, ref_argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        # argmax must match exactly: report 0 when it does, inf when not
        same = np.array_equal(to_numpy(argmax), ref_argmax)
        return [Output("y", y, ref_y, True),
                Output("argmax", np.zeros(1) if same else np.full(1, np.inf), np.zeros(1), True)]

    def run_backward(rng, target):
        x = random_array(rng, shape, target.dtype)
        _, ref_argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        g = random_array(rng, ref_argmax.shape, target.dtype)
        grad_x = target.backend.max_pool2d_backward(target.array(g), target.array(ref_argmax), shape, *window)
        return [Output("grad_x", grad_x, R.max_pool2d_backward(g, ref_argmax, shape, kernel, stride, padding), True)]

    return [Check("max_pool2d", label, run_forward, dtype=dtype),
            Check("max_pool2d_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    configs = [((2, 3, 7, 9), 3, 2, 1), ((1, 1, 5, 5), 2, 2, 0), ((2, 4, 13, 11), 3, 1, 1)]
    configs += [] if quick else [((4, 8, 56, 56), 3, 2, 1)]
    # 16-bit storage: overlapping windows, so that backward sums gradients.
    return [*(check for config in configs for check in _check(*config)),
            *(check for dtype in STORAGE_DTYPES for check in _check(*configs[0], dtype))]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

WINDOW = {"kernel": 3, "stride": 2, "padding": 1}
_WINDOW_ARGS = (WINDOW["kernel"], WINDOW["stride"], WINDOW["padding"])
SHAPES = {"gpu": (64, 64, 56, 56), "cpu": (16, 64, 56, 56), "cpu_quick": (4, 64, 56, 56)}


def _out(size: int) -> int:
    return output_size(size, WINDOW["kernel"], WINDOW["stride"], WINDOW["padding"])


def _inputs(xp, shape, seed):
    return {"x": randn(xp, shape, seed)}


def xp_forward(xp, d):
    """Max over the nine shifted strided views of the -inf padded input (no argmax)."""
    x = d["x"]
    n, c, h, w = x.shape
    k, s, p = WINDOW["kernel"], WINDOW["stride"], WINDOW["padding"]
    ho, wo = _out(h), _out(w)
    padded = xp.full((n, c, h + 2 * p, w + 2 * p), -np.inf, dtype=x.dtype)
    padded[:, :, p:p + h, p:p + w] = x
    y = None
    for kh in range(k):
        for kw in range(k):
            view = padded[:, :, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s]
            y = view.copy() if y is None else xp.maximum(y, view)
    return y


def torch_forward(torch, d):
    return torch.nn.functional.max_pool2d(torch_view(torch, d["x"]), WINDOW["kernel"], WINDOW["stride"],
                                          WINDOW["padding"], return_indices=True)


def _backward_inputs(xp, shape, seed):
    n, c, h, w = shape
    d = {"x": randn(xp, shape, seed), "grad_y": randn(xp, (n, c, _out(h), _out(w)), seed + 1)}
    try:
        d["argmax"] = F.max_pool2d(d["x"], WINDOW["kernel"], stride=WINDOW["stride"], padding=WINDOW["padding"])[1]
    except Exception:  # noqa: BLE001 - the dlgpu call reports its own failure when timed
        d["argmax"] = None
    return d


def _argmax(d):
    if d["argmax"] is None:
        raise RuntimeError("max_pool2d forward failed, so there is no argmax to scatter")
    return d["argmax"]


def xp_backward(xp, d):
    """grad_y added at argmax with an unbuffered scatter-add."""
    argmax = _argmax(d)
    n, c, h, w = d["x"].shape
    grad_x = xp.zeros((n * c, h * w), dtype=d["grad_y"].dtype)
    planes = xp.arange(n * c)[:, None]
    idx = argmax.reshape(n * c, -1)
    xp.add.at(grad_x, (xp.broadcast_to(planes, idx.shape), idx), d["grad_y"].reshape(n * c, -1))
    return grad_x.reshape(n, c, h, w)


def torch_backward(torch, d):
    k, s, p = WINDOW["kernel"], WINDOW["stride"], WINDOW["padding"]
    if "_indices" not in d:
        d["_indices"] = torch_forward(torch, d)[1]
    return torch.ops.aten.max_pool2d_with_indices_backward(
        torch_view(torch, d["grad_y"]), torch_view(torch, d["x"]), [k, k], [s, s], [p, p], [1, 1], False,
        d["_indices"])


def _forward_bytes(shape):
    n, c, h, w = shape
    return f32(prod(shape)) + 8 * n * c * _out(h) * _out(w)  # read x; write y and the int32 argmax


def _backward_bytes(shape):
    n, c, h, w = shape
    return 8 * n * c * _out(h) * _out(w) + f32(prod(shape))  # read grad_y and argmax; write grad_x


def _label(shape):
    return "x".join(str(v) for v in shape) + f" k{WINDOW['kernel']} s{WINDOW['stride']} p{WINDOW['padding']}"


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="max_pool2d", shapes=SHAPES,
        make_inputs=_inputs,
        run=lambda d: F.max_pool2d(d["x"], WINDOW["kernel"], stride=WINDOW["stride"], padding=WINDOW["padding"]),
        xp_baseline=xp_forward, torch_baseline=torch_forward,
        reference=lambda d: R.max_pool2d(d["x"], WINDOW["kernel"], stride=WINDOW["stride"],
                                         padding=WINDOW["padding"]),
        bytes_moved=_forward_bytes, shape_label=_label,
        predicted=Prediction("pct_of_ceiling", 65, 90, why="kernels/pool.cu"),
    ),
    Benchmark(
        family=FAMILY, op="max_pool2d_backward", shapes=SHAPES,
        make_inputs=_backward_inputs,
        run=lambda d: F.max_pool2d_backward(d["grad_y"], _argmax(d), tuple(d["x"].shape), *_WINDOW_ARGS),
        xp_baseline=xp_backward, torch_baseline=torch_backward,
        reference=lambda d: R.max_pool2d_backward(d["grad_y"], d["argmax"], tuple(d["x"].shape), *_WINDOW_ARGS),
        bytes_moved=_backward_bytes, shape_label=_label,
        predicted=Prediction("pct_of_ceiling", 30, 50, why="kernels/pool.cu"),
    ),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    # argmax is (2, 3, 4, 4): x4 (2, 3, 8, 8) pooled by 2x2 windows, stride 2
    return [
        BadInput("pool-rank", lambda w: F.max_pool2d(w(rand(3, 8, 8)), 2), ShapeError, "max_pool2d: x must be 4-D"),
        BadInput("pool-backward-rank",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 16)), w(argmax[..., 0]), x4.shape, 2),
                 ShapeError, "grad_y must be 4-D"),
        BadInput("pool-backward-argmax-shape",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(argmax[:, :, :2]), x4.shape, 2),
                 ShapeError, "argmax has shape"),
        BadInput("pool-backward-empty",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 0, 4)), w(argmax[:, :, :0]), x4.shape, 2),
                 ShapeError, "gives 4x4 outputs"),
        # an input_shape or a window the forward call cannot have had: refused, never routed to wrong places
        BadInput("pool-backward-input-shape",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(argmax), (2, 3, 12, 12), 2),
                 ShapeError, "input_shape and the window must be those of the forward call"),
        BadInput("pool-backward-window",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(argmax), x4.shape, 3, 2),
                 ShapeError, "gives 3x3 outputs"),
        BadInput("pool-kernel-zero", lambda w: F.max_pool2d(w(x4), 0), ArgumentError, "kernel_size must be >= 1"),
        BadInput("pool-padding-too-large", lambda w: F.max_pool2d(w(x4), (2, 4), padding=(2, 0)),
                 ArgumentError, "exceeds half the kernel"),
        BadInput("pool-stride-bool", lambda w: F.max_pool2d(w(x4), 2, stride=True),
                 ArgumentError, "stride must be an int"),
        BadInput("argmax-negative",  # the CUDA backend checks argmax on the host in debug mode only
                 lambda w: in_debug_mode(F.max_pool2d_backward, w(rand(2, 3, 4, 4)), w(argmax - 1), x4.shape, 2),
                 ArgumentError, "outside the input plane"),
        BadInput("argmax-float",
                 lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(rand(2, 3, 4, 4)), x4.shape, 2),
                 DtypeError, "argmax must be int32"),
        # a consistent but absurd input_shape: 4 of 2**40 rows with stride 2**38, 192 TiB of grad_x
        on_cpu("pool-backward-too-large",
               lambda: F.max_pool2d_backward(rand(2, 3, 4, 4), argmax, (2, 3, 2**40, 8), 2, (2**38, 2)),
               ShapeError, "more than the"),
        on_gpu("mix-pool-backward-argmax",
               lambda: F.max_pool2d_backward(FakeCupy(rand(2, 3, 4, 4)), argmax, x4.shape, 2),
               DeviceError, "argmax is numpy"),
        on_cpu("pool-rank", lambda: F.max_pool2d(rand(8, 8), 2), ShapeError, "max_pool2d: x must be 4-D"),
        on_cpu("pool-backward-nc",
               lambda: F.max_pool2d_backward(rand(2, 3, 2, 2), np.zeros((2, 3, 2, 2), np.int32), (2, 4, 4, 4), 2),
               ShapeError, "differ in N or C"),
        on_cpu("stride-negative", lambda: F.max_pool2d(x4, 2, stride=-1), ArgumentError, "stride must be >= 1"),
        on_cpu("pool-kernel-too-large", lambda: F.max_pool2d(x4, 9), ArgumentError, "larger than the padded input"),
        on_cpu("pool-padding-too-large", lambda: F.max_pool2d(x4, 3, padding=2),
               ArgumentError, "exceeds half the kernel"),
        on_cpu("argmax-out-of-plane",
               lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.full((1, 1, 2, 2), 16, np.int32), (1, 1, 4, 4), 2),
               ArgumentError, "outside the input plane"),
        on_cpu("input-shape-bad",
               lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int32), (1, 1, 4), 2),
               ArgumentError, "input_shape must be 4 non-negative ints"),
        on_cpu("argmax-int64",
               lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int64), (1, 1, 4, 4), 2),
               DtypeError, "argmax must be int32"),
        on_cpu("argmax-byte-order",
               lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.zeros((1, 1, 2, 2), ">i4"), (1, 1, 4, 4), 2),
               DtypeError, "byte order"),
    ]
