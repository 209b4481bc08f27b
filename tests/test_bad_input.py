"""Wrong calls raise the right DlgpuError subclass, with a message naming the op and the value.

Each case is (id, call, expected error class, text the message must contain).
After every refused call the process keeps working: a final test runs a
valid op on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu.functional as F
from dlgpu.errors import ArgumentError, DeviceError, DlgpuError, DtypeError, LayoutError, ShapeError

rng = np.random.default_rng(1234)
f32 = np.float32


def rand(*shape, dtype=f32):
    return rng.standard_normal(shape).astype(dtype)


x4 = rand(2, 3, 8, 8)
w4 = rand(4, 3, 3, 3)
a2, b2 = rand(5, 7), rand(7, 3)
logits, labels = rand(4, 10), np.array([0, 3, 9, 2], dtype=np.int64)
readonly = rand(5, 3)
readonly.flags.writeable = False
shared = rand(5, 7)


class FakeGpuTensor:
    """Looks like a GPU tensor of another framework (exposes the CUDA array interface)."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False), "version": 3}


CASES = [
    # wrong rank
    ("matmul-rank", lambda: F.matmul(rand(5), b2), ShapeError, "matmul: a must be 2-D"),
    ("conv-rank", lambda: F.conv2d(rand(3, 8, 8), w4), ShapeError, "conv2d: x must be 4-D"),
    ("conv-weight-rank", lambda: F.conv2d(x4, rand(4, 3, 3)), ShapeError, "weight must be 4-D"),
    ("pool-rank", lambda: F.max_pool2d(rand(8, 8), 2), ShapeError, "max_pool2d: x must be 4-D"),
    ("linear-rank", lambda: F.linear(rand(2, 3, 4), rand(5, 4)), ShapeError, "linear: x must be 2-D"),
    ("softmax-rank", lambda: F.softmax_cross_entropy(rand(10), labels[:1]), ShapeError, "logits must be 2-D"),
    # mismatched shapes
    ("matmul-inner", lambda: F.matmul(a2, rand(6, 3)), ShapeError, "inner dimensions differ"),
    ("matmul-transpose-inner", lambda: F.matmul(a2, b2, transpose_b=True), ShapeError, "transpose_b=True"),
    ("conv-channels", lambda: F.conv2d(x4, rand(4, 2, 3, 3)), ShapeError, "x has 3 channels"),
    ("conv-bias", lambda: F.conv2d(x4, w4, rand(5)), ShapeError, "bias has 5 elements"),
    ("linear-features", lambda: F.linear(rand(2, 4), rand(5, 3)), ShapeError, "x has 4 features"),
    ("linear-backward-grad", lambda: F.linear_backward(rand(2, 4), rand(2, 3), rand(5, 3)), ShapeError,
     "grad_y has shape (2, 4)"),
    ("conv-backward-grad", lambda: F.conv2d_backward(rand(2, 4, 5, 5), x4, w4), ShapeError, "expected (2, 4, 6, 6)"),
    ("relu-backward-shapes", lambda: F.relu_backward(rand(3, 4), rand(4, 3)), ShapeError, "relu_backward"),
    ("labels-count", lambda: F.softmax_cross_entropy(logits, labels[:3]), ShapeError, "labels has 3 entries"),
    ("sgd-grad-shape", lambda: F.sgd_step(rand(4), rand(5), None, lr=0.1), ShapeError, "grad has shape (5,)"),
    ("pool-backward-nc", lambda: F.max_pool2d_backward(rand(2, 3, 2, 2), np.zeros((2, 3, 2, 2), np.int32),
                                                       (2, 4, 4, 4)), ShapeError, "differ in N or C"),
    ("empty-dimension", lambda: F.matmul(rand(0, 7), b2), ShapeError, "empty dimension"),
    # hyper-parameters
    ("stride-zero", lambda: F.conv2d(x4, w4, stride=0), ArgumentError, "stride must be >= 1"),
    ("stride-negative", lambda: F.max_pool2d(x4, 2, stride=-1), ArgumentError, "stride must be >= 1"),
    ("padding-negative", lambda: F.conv2d(x4, w4, padding=-1), ArgumentError, "padding must be >= 0"),
    ("dilation-zero", lambda: F.conv2d(x4, w4, dilation=0), ArgumentError, "dilation must be >= 1"),
    ("stride-float", lambda: F.conv2d(x4, w4, stride=1.5), ArgumentError, "stride must be an int"),
    ("stride-triple", lambda: F.conv2d(x4, w4, stride=(1, 1, 1)), ArgumentError, "pair"),
    ("kernel-too-large", lambda: F.conv2d(x4, rand(4, 3, 11, 3)), ArgumentError, "larger than the padded input"),
    ("pool-kernel-too-large", lambda: F.max_pool2d(x4, 9), ArgumentError, "larger than the padded input"),
    ("pool-padding-too-large", lambda: F.max_pool2d(x4, 3, padding=2), ArgumentError, "exceeds half the kernel"),
    ("activation-unknown", lambda: F.linear(a2, rand(3, 7), activation="gelu"), ArgumentError, "'gelu'"),
    ("relu-backward-needs-y", lambda: F.linear_backward(rand(5, 3), a2, rand(3, 7), activation="relu"),
     ArgumentError, "needs y"),
    ("transpose-flag-type", lambda: F.matmul(a2, b2, transpose_a="yes"), ArgumentError, "transpose_a must be a bool"),
    ("precision-unknown", lambda: F.matmul(a2, b2, precision="fp8"), ArgumentError, "'fp8'"),
    ("label-too-large", lambda: F.softmax_cross_entropy(logits, np.array([0, 1, 10, 2])), ArgumentError,
     "label 10 is outside [0, 10)"),
    ("label-negative", lambda: F.softmax_cross_entropy_backward(logits, np.array([0, -1, 1, 2])), ArgumentError,
     "label -1"),
    ("argmax-out-of-plane", lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.full((1, 1, 2, 2), 16, np.int32),
                                                          (1, 1, 4, 4)), ArgumentError, "outside the input plane"),
    ("input-shape-bad", lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int32), (1, 1, 4)),
     ArgumentError, "input_shape must be 4 positive ints"),
    ("lr-negative", lambda: F.sgd_step(rand(4), rand(4), None, lr=-0.1), ArgumentError, "lr must be finite"),
    ("lr-nan", lambda: F.sgd_step(rand(4), rand(4), None, lr=float("nan")), ArgumentError, "lr must be finite"),
    ("momentum-without-velocity", lambda: F.sgd_step(rand(4), rand(4), None, lr=0.1, momentum=0.9), ArgumentError,
     "needs a velocity"),
    # dtypes
    ("integer-input", lambda: F.relu(np.arange(6)), DtypeError, "floating dtype is required"),
    ("mixed-dtypes", lambda: F.matmul(a2, b2.astype(np.float64)), DtypeError, "must share one dtype"),
    ("float16-on-cpu", lambda: F.relu(rand(4, dtype=np.float16)), DtypeError, "float16 is not supported"),
    ("label-float", lambda: F.softmax_cross_entropy(logits, labels.astype(f32)), DtypeError, "labels must be int32"),
    ("argmax-int64", lambda: F.max_pool2d_backward(rand(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int64), (1, 1, 4, 4)),
     DtypeError, "argmax must be int32"),
    ("out-dtype", lambda: F.relu(a2, out=np.empty((5, 7), np.float64)), DtypeError, "out has dtype float64"),
    ("list-input", lambda: F.relu([1.0, 2.0]), DtypeError, "must be a NumPy or CuPy array"),
    # devices / array kinds
    ("foreign-gpu-tensor-with-host-array", lambda: F.matmul(FakeGpuTensor(), a2), DeviceError,
     "must all be on the CPU or all on one GPU"),
    # layout and outputs
    # strided inputs are copied (functional's docstring); what the op writes must be contiguous
    ("out-non-contiguous", lambda: F.matmul(a2, b2, out=np.empty((3, 5), f32).T), LayoutError,
     "out is not C-contiguous"),
    ("sgd-sliced-param", lambda: F.sgd_step(x4[:, :, ::2], rand(2, 3, 4, 8), None, lr=0.1), LayoutError,
     "param is not C-contiguous"),
    ("out-shape", lambda: F.matmul(a2, b2, out=np.empty((3, 5), f32)), ShapeError, "out has shape (3, 5)"),
    ("out-readonly", lambda: F.matmul(a2, b2, out=readonly), LayoutError, "read-only"),
    ("out-aliases-input", lambda: F.matmul(shared, rand(7, 7), out=shared), LayoutError, "overlaps input a"),
    ("sgd-param-aliases-grad", lambda: F.sgd_step(shared, shared, None, lr=0.1), LayoutError, "param overlaps grad"),
    ("sgd-readonly-param", lambda: F.sgd_step(readonly, rand(5, 3), None, lr=0.1), LayoutError, "read-only"),
]


@pytest.mark.parametrize("name, call, error, text", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_a_useful_message(name, call, error, text):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, DlgpuError)
    assert text in str(info.value), f"message {str(info.value)!r} lacks {text!r}"


def test_enough_distinct_bad_inputs():
    assert len({case[0] for case in CASES}) >= 25


def test_out_overlapping_part_of_input_is_refused():
    buffer = rand(10)
    with pytest.raises(LayoutError, match="overlaps input x"):
        F.relu(buffer[:8], out=buffer[2:])


def test_in_place_elementwise_is_allowed():
    x = rand(3, 5)
    expected = np.maximum(x, 0)
    result = F.relu(x, out=x)
    assert result is x
    np.testing.assert_array_equal(x, expected)


def test_refused_calls_have_no_side_effects_and_the_process_keeps_working():
    param, grad = rand(4), rand(5)
    before = param.copy()
    with pytest.raises(ShapeError):
        F.sgd_step(param, grad, None, lr=0.1)
    np.testing.assert_array_equal(param, before)
    out = F.matmul(a2, b2)
    np.testing.assert_allclose(out, a2 @ b2, rtol=1e-5, atol=1e-5)


def test_index_range_checks_are_skipped_only_while_a_cuda_graph_is_captured(monkeypatch):
    """Reading values back is illegal during stream capture; the kernels guard indices there."""
    import sys
    import types

    import dlgpu.cpu
    import dlgpu.cuda

    capturing = {"now": True}
    stream = types.SimpleNamespace(is_capturing=lambda: capturing["now"])
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)

    class DeviceIndices:  # stands in for a CuPy index array
        def min(self):
            return 7

        def max(self):
            return 99

    assert dlgpu.cuda.BACKEND.index_range(DeviceIndices()) is None
    capturing["now"] = False
    assert dlgpu.cuda.BACKEND.index_range(DeviceIndices()) == (7, 99)
    assert dlgpu.cpu.BACKEND.index_range(np.array([3, -2, 5])) == (-2, 5)
