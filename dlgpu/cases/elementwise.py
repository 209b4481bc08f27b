"""Cases of the elementwise stem (kernels/elementwise.cu): relu, tanh, sigmoid and their backward passes.

Checks: every activation forward and backward on sizes 1, a prime and an odd
3-D shape (plus 2^16 + 3 outside quick mode), inputs scaled by 3 so tanh and
sigmoid leave their linear range; outputs poisoned.  Backward passes take the
forward output, as the ops do.  Tolerance: elementwise (exact up to rounding).

Benchmarks: relu forward and backward on 2^26 elements (the speed-target
size), against the same expression in CuPy (GPU) or NumPy and the reference
(CPU); and the same two on float16 and bfloat16 storage (fp32 arithmetic),
against the same expression on that dtype (CuPy float16; bfloat16 needs CuPy
14).

Each benchmark carries the share of the copy bandwidth its kernel was
predicted to reach on an H100 before any GPU ran it (``predicted``); the
reasoning, from the sm_90a SASS, is in kernels/elementwise.cu's header.
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.precision import BFLOAT16
from dlgpu.cases.case import (
    STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, in_storage, prod, randn, storage_unavailable,
)
from dlgpu.testing import random_array
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, LayoutError, ShapeError
from dlgpu.testing.bad_input import BadInput, FakeCupy, FakeDlpack, a2, buffer, on_cpu, on_gpu, rand, readonly

FAMILY = "elementwise"

# Each activation: the backend's forward and backward, and the reference's.
ACTIVATIONS = {
    "relu": (lambda b: b.relu, lambda b: b.relu_backward, R.relu, R.relu_backward),
    "tanh": (lambda b: b.tanh, lambda b: b.tanh_backward, R.tanh, R.tanh_backward),
    "sigmoid": (lambda b: b.sigmoid, lambda b: b.sigmoid_backward, R.sigmoid, R.sigmoid_backward),
}


def _activation_check(name: str, shape: tuple, dtype=None) -> list[Check]:
    forward, backward, ref_forward, ref_backward = ACTIVATIONS[name]

    def run_forward(rng, target):
        x = random_array(rng, shape, target.dtype, scale=3.0)
        y = forward(target.backend)(target.array(x), target.poisoned(shape))
        return [Output("y", y, ref_forward(x), True)]

    def run_backward(rng, target):
        x = random_array(rng, shape, target.dtype, scale=3.0)
        g = random_array(rng, shape, target.dtype)
        y_saved = ref_forward(x).astype(target.dtype)
        grad_x = backward(target.backend)(target.array(g), target.array(y_saved), target.poisoned(shape))
        return [Output("grad_x", grad_x, ref_backward(g, y_saved), True)]

    label = "x".join(map(str, shape))
    return [Check(name, label, run_forward, dtype=dtype), Check(f"{name}_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    shapes = [(1,), (13,), (5, 7, 3)] + ([] if quick else [((1 << 16) + 3,)])
    # 16-bit storage on one shape with a head, vectors and a tail (105 elements).
    return [*(check for name in ACTIVATIONS for shape in shapes for check in _activation_check(name, shape)),
            *(check for dtype in STORAGE_DTYPES for name in ACTIVATIONS
              for check in _activation_check(name, (5, 7, 3), dtype))]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

# 2^26 elements on the GPU: the speed-target size; the CPU sizes still exceed its caches.
SHAPES = {"gpu": (1 << 26,), "cpu": (1 << 22,), "cpu_quick": (1 << 20,)}

# Shares of the measured copy bandwidth predicted for an H100 before any GPU ran the kernels (kernels/elementwise.cu's
# header has the reasoning): float32 streams like a copy; 16-bit storage moves half the bytes in about half the time.
_PREDICTED_F32 = Prediction("pct_of_ceiling", 85, 100, why="kernels/elementwise.cu")
_PREDICTED_16BIT = Prediction("pct_of_ceiling", 80, 100, why="kernels/elementwise.cu")


def _relu_inputs(xp, shape, seed):
    return {"x": randn(xp, shape, seed)}


def _relu_backward_inputs(xp, shape, seed):
    return {"grad_y": randn(xp, shape, seed), "y": xp.maximum(randn(xp, shape, seed + 1), 0)}


def _storage_rows(dtype: np.dtype) -> tuple[Benchmark, ...]:
    """relu forward and backward on 16-bit storage, against the same expression on that dtype."""
    size, note = dtype.itemsize, "16-bit storage, fp32 arithmetic; baseline: the same expression on that dtype"
    return (
        Benchmark(
            family=FAMILY, op="relu_forward", variant=dtype.name, dtype=dtype.name, shapes=SHAPES,
            make_inputs=in_storage(_relu_inputs, dtype),
            run=lambda d: F.relu(d["x"]),
            xp_baseline=lambda xp, d: xp.maximum(d["x"], 0),
            reference=lambda d: R.relu(d["x"]),
            bytes_moved=lambda s: size * 2 * prod(s), note=note, unavailable=storage_unavailable(dtype),
            predicted=_PREDICTED_16BIT,
        ),
        Benchmark(
            family=FAMILY, op="relu_backward", variant=dtype.name, dtype=dtype.name, shapes=SHAPES,
            make_inputs=in_storage(_relu_backward_inputs, dtype),
            run=lambda d: F.relu_backward(d["grad_y"], d["y"]),
            xp_baseline=lambda xp, d: xp.where(d["y"] > 0, d["grad_y"], xp.zeros((), d["grad_y"].dtype)),
            reference=lambda d: R.relu_backward(d["grad_y"], d["y"]),
            bytes_moved=lambda s: size * 3 * prod(s), note=note, unavailable=storage_unavailable(dtype),
            predicted=_PREDICTED_16BIT,
        ),
    )


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="relu_forward", shapes=SHAPES,
        make_inputs=_relu_inputs,
        run=lambda d: F.relu(d["x"]),
        xp_baseline=lambda xp, d: xp.maximum(d["x"], 0),
        reference=lambda d: R.relu(d["x"]),
        bytes_moved=lambda s: f32(2 * prod(s)), predicted=_PREDICTED_F32,
    ),
    Benchmark(
        family=FAMILY, op="relu_backward", shapes=SHAPES,
        make_inputs=_relu_backward_inputs,
        run=lambda d: F.relu_backward(d["grad_y"], d["y"]),
        xp_baseline=lambda xp, d: xp.where(d["y"] > 0, d["grad_y"], np.float32(0)),
        reference=lambda d: R.relu_backward(d["grad_y"], d["y"]),
        bytes_moved=lambda s: f32(3 * prod(s)), predicted=_PREDICTED_F32,
    ),
    *(row for dtype in STORAGE_DTYPES for row in _storage_rows(np.dtype(dtype))),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("tanh-backward-shapes", lambda w: F.tanh_backward(w(rand(3, 4)), w(rand(3, 5))),
                 ShapeError, "tanh_backward"),
        BadInput("sigmoid-backward-mixed", lambda w: F.sigmoid_backward(w(rand(3)), w(rand(3, dtype=np.float64))),
                 DtypeError, "must share one dtype"),
        BadInput("out-transposed", lambda w: F.relu(w(a2), out=w(rand(7, 5)).T),
                 LayoutError, "out is not C-contiguous"),
        BadInput("out-shifted-in-place", lambda w: F.tanh(w(buffer.ravel()[:30]), out=w(buffer.ravel()[5:])),
                 LayoutError, "out overlaps input x"),
        on_cpu("cpu-out-readonly", lambda: F.relu(a2, out=readonly(5, 7)), LayoutError, "out is read-only"),
        on_cpu("cpu-stream-given", lambda: F.relu(a2, stream=0), ArgumentError, "streams order GPU work only"),
        on_gpu("gpu-float64", lambda: F.relu(FakeCupy(rand(3, dtype=np.float64))),
               DtypeError, "not supported by the dlgpu.cuda backend"),
        on_gpu("gpu-out-on-other-device", lambda: F.relu(FakeCupy(a2, 0), out=FakeCupy(rand(5, 7), 1)),
               DeviceError, "different GPUs"),
        on_gpu("mix-relu-backward", lambda: F.relu_backward(rand(3), FakeCupy(rand(3))), DeviceError, "y is cupy"),
        on_gpu("mix-out-on-host", lambda: F.tanh(FakeCupy(a2), out=rand(5, 7)),
               DeviceError, "must all be NumPy or all CuPy"),
        on_gpu("mix-out-on-device", lambda: F.sigmoid(a2, out=FakeCupy(rand(5, 7))),
               DeviceError, "must all be NumPy or all CuPy"),
        on_gpu("mix-dlpack-cpu-and-cupy", lambda: F.relu_backward(FakeDlpack(1), FakeCupy(rand(2, 2))),
               DeviceError, "must all be on the CPU or all on one GPU"),
        on_gpu("dlpack-gpu-and-cupy-on-other-gpu", lambda: F.relu_backward(FakeDlpack(2, 3), FakeCupy(rand(2, 2), 0)),
               DeviceError, "different GPUs"),
        on_gpu("dlpack-unknown-device", lambda: F.relu(FakeDlpack(8)), DeviceError, "DLPack device type 8"),
        on_cpu("relu-backward-shapes", lambda: F.relu_backward(rand(3, 4), rand(4, 3)), ShapeError, "relu_backward"),
        on_cpu("integer-input", lambda: F.relu(np.arange(6)), DtypeError, "floating dtype is required"),
        on_cpu("longdouble-on-cpu", lambda: F.relu(rand(4, dtype=np.longdouble)), DtypeError, "is not supported"),
        on_cpu("mixed-storage", lambda: F.relu_backward(rand(3, dtype=np.float16), rand(3, dtype=BFLOAT16)),
               DtypeError, "must share one dtype"),
        on_cpu("out-dtype", lambda: F.relu(a2, out=np.empty((5, 7), np.float64)), DtypeError, "out has dtype float64"),
        on_cpu("list-input", lambda: F.relu([1.0, 2.0]), DtypeError, "must be a NumPy or CuPy array"),
    ]
