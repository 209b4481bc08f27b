"""The bad-input matrix: every op, both backends, and the host/device and GPU/GPU mixes.

Each case is refused with the right DlgpuError subclass, a message naming the
op and the value, and *before any launch*: every backend function (CPU and
CUDA) is replaced by a spy that records calls, and a refused case must leave
the record empty.  After each refusal a valid call on the same backend goes
through, so the process keeps working.

The CUDA backend's cases run on this CPU-only machine with :class:`FakeCupy`,
a stand-in whose type's module is ``cupy`` (how dlgpu.functional recognises a
CuPy array) wrapping NumPy memory: validation never touches CuPy itself, and
the spied backend is never reached by a refused call.  Foreign arrays (DLPack
or CUDA-array-interface producers) are small stand-ins too: their placement
is decided from ``__dlpack_device__`` before anything is imported.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

import dlgpu.cpu
import dlgpu.cuda
import dlgpu.functional as F
from dlgpu.backend import OPS
from dlgpu.errors import (
    ArgumentError,
    BackendUnavailableError,
    DeviceError,
    DlgpuError,
    DtypeError,
    LayoutError,
    ShapeError,
)

_rng = np.random.default_rng(8)


class FakeCupy:
    """A cupy.ndarray look-alike over NumPy memory, on GPU ``device``."""

    def __init__(self, array: np.ndarray, device: int = 0):
        self._a = array
        self.device = SimpleNamespace(id=device)

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: FakeCupy(self._a.T, self.device.id))

    @property
    def flags(self):  # CuPy's flags: no 'writeable', no 'aligned'
        return SimpleNamespace(c_contiguous=self._a.flags.c_contiguous, f_contiguous=self._a.flags.f_contiguous)

    @property
    def data(self):
        return SimpleNamespace(ptr=self._a.ctypes.data)

    def copy(self, order="C"):
        return FakeCupy(self._a.copy(order=order), self.device.id)

    def min(self):
        return self._a.min()

    def max(self):
        return self._a.max()

    def __getitem__(self, index):
        return FakeCupy(self._a[index], self.device.id)


FakeCupy.__module__ = "cupy"


class FakeDlpack:
    """A DLPack producer (a torch/JAX tensor stand-in) on DLPack device (type, id)."""

    def __init__(self, device_type: int, device_id: int = 0, shape=(2, 2)):
        self._device = (device_type, device_id)
        self.shape = shape

    def __dlpack_device__(self):
        return self._device

    def __dlpack__(self, stream=None):  # never reached by a refused call
        raise AssertionError("a refused call must not import the array")


def rand(*shape, dtype=np.float32):
    return _rng.standard_normal(shape).astype(dtype)


def readonly(*shape):
    a = rand(*shape)
    a.flags.writeable = False
    return a


@pytest.fixture
def launches(monkeypatch):
    """Replace every backend function by a spy; CPU spies still compute, CUDA spies return None."""
    record = []
    for backend in (dlgpu.cpu.BACKEND, dlgpu.cuda.BACKEND):
        for name in OPS:
            real = getattr(backend, name)

            def spy(*args, _real=real, _name=name, _backend=backend):
                record.append((_backend.name, _name))
                return _real(*args) if _backend is dlgpu.cpu.BACKEND else None

            monkeypatch.setattr(backend, name, spy)
    return record


# A case: (id, call(w) where w wraps a NumPy array for the backend under test, error, message text).
x4, w4 = rand(2, 3, 8, 8), rand(4, 3, 3, 3)
a2, b2 = rand(5, 7), rand(7, 3)
logits, labels = rand(4, 10), np.array([0, 3, 9, 2], np.int64)
y4 = np.abs(rand(2, 4, 6, 6))
buffer = rand(5, 7)
argmax = np.zeros((2, 3, 4, 4), np.int32)

BOTH = [
    # wrong rank
    ("matmul-rank", lambda w: F.matmul(w(rand(5)), w(b2)), ShapeError, "matmul: a must be 2-D"),
    ("matmul-backward-rank", lambda w: F.matmul_backward(w(rand(5, 3, 1)), w(a2), w(b2)), ShapeError,
     "grad_c must be 2-D"),
    ("linear-weight-rank", lambda w: F.linear(w(a2), w(rand(7))), ShapeError, "weight must be 2-D"),
    ("conv-rank", lambda w: F.conv2d(w(rand(3, 8, 8)), w(w4)), ShapeError, "conv2d: x must be 4-D"),
    ("conv-backward-grad-rank", lambda w: F.conv2d_backward(w(rand(2, 4, 36)), w(x4), w(w4)), ShapeError,
     "grad_y must be 4-D"),
    ("pool-rank", lambda w: F.max_pool2d(w(rand(3, 8, 8)), 2), ShapeError, "max_pool2d: x must be 4-D"),
    ("pool-backward-rank", lambda w: F.max_pool2d_backward(w(rand(2, 3, 16)), w(argmax[..., 0]), x4.shape),
     ShapeError, "grad_y must be 4-D"),
    ("softmax-backward-rank", lambda w: F.softmax_cross_entropy_backward(w(rand(40)), w(labels)), ShapeError,
     "probs must be 2-D"),
    ("labels-rank", lambda w: F.softmax_cross_entropy(w(logits), w(labels.reshape(2, 2))), ShapeError,
     "labels must be 1-D"),
    # shapes that disagree
    ("matmul-inner", lambda w: F.matmul(w(a2), w(rand(6, 3))), ShapeError, "inner dimensions differ"),
    ("matmul-backward-grad", lambda w: F.matmul_backward(w(rand(3, 5)), w(a2), w(b2)), ShapeError,
     "grad_c has shape (3, 5)"),
    ("linear-bias", lambda w: F.linear(w(a2), w(rand(3, 7)), w(rand(4))), ShapeError, "bias has 4 elements"),
    ("linear-backward-y", lambda w: F.linear_backward(w(rand(5, 3)), w(a2), w(rand(3, 7)), y=w(rand(3, 5)),
                                                      activation="relu"), ShapeError, "y has shape (3, 5)"),
    ("conv-channels", lambda w: F.conv2d(w(x4), w(rand(4, 5, 3, 3))), ShapeError, "x has 3 channels"),
    ("conv-backward-grad", lambda w: F.conv2d_backward(w(rand(2, 4, 5, 5)), w(x4), w(w4)), ShapeError,
     "expected (2, 4, 6, 6)"),
    ("tanh-backward-shapes", lambda w: F.tanh_backward(w(rand(3, 4)), w(rand(3, 5))), ShapeError, "tanh_backward"),
    ("pool-backward-argmax-shape", lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(argmax[:, :, :2]),
                                                                   x4.shape), ShapeError, "argmax has shape"),
    ("softmax-labels-count", lambda w: F.softmax_cross_entropy(w(logits), w(labels[:2])), ShapeError,
     "labels has 2 entries"),
    ("sgd-velocity-shape", lambda w: F.sgd_step(w(rand(4)), w(rand(4)), w(rand(5)), lr=0.1, momentum=0.9),
     ShapeError, "velocity has shape (5,)"),
    # zero-size dimensions
    ("matmul-empty", lambda w: F.matmul(w(rand(5, 0)), w(rand(0, 3))), ShapeError, "empty dimension"),
    ("conv-empty-batch", lambda w: F.conv2d(w(rand(0, 3, 8, 8)), w(w4)), ShapeError, "x has an empty dimension"),
    ("relu-empty", lambda w: F.relu(w(rand(4, 0))), ShapeError, "relu: x has an empty dimension"),
    ("softmax-empty", lambda w: F.softmax_cross_entropy(w(rand(0, 10)), w(labels[:0])), ShapeError,
     "empty dimension"),
    ("sgd-empty", lambda w: F.sgd_step(w(rand(0)), w(rand(0)), None, lr=0.1), ShapeError, "empty dimension"),
    ("pool-backward-empty", lambda w: F.max_pool2d_backward(w(rand(2, 3, 0, 4)), w(argmax[:, :, :0]),
                                                            x4.shape), ShapeError, "empty dimension"),
    # hyper-parameters
    ("conv-stride-zero", lambda w: F.conv2d(w(x4), w(w4), stride=(1, 0)), ArgumentError, "stride must be >= 1"),
    ("conv-padding-negative", lambda w: F.conv2d(w(x4), w(w4), padding=(-1, 0)), ArgumentError,
     "padding must be >= 0"),
    ("conv-dilated-kernel-too-large", lambda w: F.conv2d(w(x4), w(w4), dilation=4), ArgumentError,
     "larger than the padded input"),
    ("conv-backward-stride-negative", lambda w: F.conv2d_backward(w(y4), w(x4), w(w4), stride=-1), ArgumentError,
     "stride must be >= 1"),
    ("pool-kernel-zero", lambda w: F.max_pool2d(w(x4), 0), ArgumentError, "kernel_size must be >= 1"),
    ("pool-padding-too-large", lambda w: F.max_pool2d(w(x4), (2, 4), padding=(2, 0)), ArgumentError,
     "exceeds half the kernel"),
    ("pool-stride-bool", lambda w: F.max_pool2d(w(x4), 2, stride=True), ArgumentError, "stride must be an int"),
    ("linear-activation", lambda w: F.linear(w(a2), w(rand(3, 7)), activation="tanh"), ArgumentError, "'tanh'"),
    ("conv-backward-relu-needs-y", lambda w: F.conv2d_backward(w(y4), w(x4), w(w4), activation="relu"),
     ArgumentError, "needs y"),
    ("matmul-precision", lambda w: F.matmul(w(a2), w(b2), precision="int8"), ArgumentError, "'int8'"),
    ("label-out-of-range", lambda w: F.softmax_cross_entropy(w(logits), w(np.array([0, 1, 2, 99]))),
     ArgumentError, "label 99 is outside [0, 10)"),
    ("argmax-negative", lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(argmax - 1), x4.shape),
     ArgumentError, "outside the input plane"),
    ("sgd-weight-decay-inf", lambda w: F.sgd_step(w(rand(4)), w(rand(4)), None, lr=0.1, weight_decay=np.inf),
     ArgumentError, "weight_decay must be finite"),
    ("sgd-momentum-negative", lambda w: F.sgd_step(w(rand(4)), w(rand(4)), w(rand(4)), lr=0.1, momentum=-0.5),
     ArgumentError, "momentum must be finite and >= 0"),
    # dtypes
    ("matmul-int", lambda w: F.matmul(w(np.ones((5, 7), np.int32)), w(b2)), DtypeError, "floating dtype"),
    ("sigmoid-backward-mixed", lambda w: F.sigmoid_backward(w(rand(3)), w(rand(3, dtype=np.float64))),
     DtypeError, "must share one dtype"),
    ("conv-bias-mixed", lambda w: F.conv2d(w(x4), w(w4), w(rand(4, dtype=np.float64))), DtypeError,
     "must share one dtype"),
    ("float16", lambda w: F.tanh(w(rand(4, dtype=np.float16))), DtypeError, "float16 is not supported"),
    ("labels-uint8", lambda w: F.softmax_cross_entropy_backward(w(logits), w(labels.astype(np.uint8))),
     DtypeError, "labels must be int32 or int64"),
    ("argmax-float", lambda w: F.max_pool2d_backward(w(rand(2, 3, 4, 4)), w(rand(2, 3, 4, 4)), x4.shape),
     DtypeError, "argmax must be int32"),
    ("out-dtype", lambda w: F.linear(w(a2), w(rand(3, 7)), out=w(rand(5, 3, dtype=np.float64))), DtypeError,
     "out has dtype float64"),
    # outputs: shape, layout, aliasing
    ("out-shape", lambda w: F.conv2d(w(x4), w(w4), out=w(rand(2, 4, 6, 5))), ShapeError, "out has shape"),
    ("out-transposed", lambda w: F.relu(w(a2), out=w(rand(7, 5)).T), LayoutError, "out is not C-contiguous"),
    ("out-aliases-input", lambda w: F.matmul(w(buffer), w(rand(7, 7)), out=w(buffer)), LayoutError,
     "out overlaps input a"),
    ("out-aliases-weight", lambda w: F.linear(w(rand(7, 7)), w(buffer[:3]), out=w(buffer.ravel()[14:35].reshape(7, 3))),
     LayoutError,
     "out overlaps input weight"),
    ("out-shifted-in-place", lambda w: F.tanh(w(buffer.ravel()[:30]), out=w(buffer.ravel()[5:])), LayoutError,
     "out overlaps input x"),
    ("sgd-strided-param", lambda w: F.sgd_step(w(rand(4, 6)[:, ::2]), w(rand(4, 3)), None, lr=0.1), LayoutError,
     "param is not C-contiguous"),
    ("sgd-strided-velocity", lambda w: F.sgd_step(w(rand(4, 3)), w(rand(4, 3)), w(rand(3, 4)).T, lr=0.1,
                                                  momentum=0.9), LayoutError, "velocity is not C-contiguous"),
    ("sgd-velocity-aliases-grad", lambda w: F.sgd_step(w(rand(5, 7)), w(buffer), w(buffer), lr=0.1, momentum=0.9),
     LayoutError, "velocity overlaps grad"),
]

CPU_ONLY = [
    ("cpu-out-readonly", lambda: F.relu(a2, out=readonly(5, 7)), LayoutError, "out is read-only"),
    ("cpu-velocity-readonly", lambda: F.sgd_step(rand(5, 7), rand(5, 7), readonly(5, 7), lr=0.1, momentum=0.9),
     LayoutError, "velocity is read-only"),
    ("cpu-stream-given", lambda: F.relu(a2, stream=0), ArgumentError, "streams order GPU work only"),
    ("cpu-not-an-array", lambda: F.matmul(a2, ((1.0,),)), DtypeError, "must be a NumPy or CuPy array"),
]

GPU_ONLY = [
    ("gpu-float64", lambda: F.relu(FakeCupy(rand(3, dtype=np.float64))), DtypeError,
     "not supported by the dlgpu.cuda backend"),
    ("gpu-different-devices", lambda: F.matmul(FakeCupy(a2, 0), FakeCupy(b2, 1)), DeviceError,
     "different GPUs (a on GPU 0, b on GPU 1)"),
    ("gpu-sgd-different-devices", lambda: F.sgd_step(FakeCupy(rand(4), 1), FakeCupy(rand(4), 1),
                                                     FakeCupy(rand(4), 2), lr=0.1, momentum=0.9), DeviceError,
     "velocity on GPU 2"),
    ("gpu-out-on-other-device", lambda: F.relu(FakeCupy(a2, 0), out=FakeCupy(rand(5, 7), 1)), DeviceError,
     "different GPUs"),
]

MIXED = [  # host and device in one call: refused whichever argument is the odd one out
    ("mix-matmul", lambda: F.matmul(a2, FakeCupy(b2)), DeviceError, "must all be NumPy or all CuPy"),
    ("mix-linear-bias", lambda: F.linear(FakeCupy(a2), FakeCupy(rand(3, 7)), rand(3)), DeviceError,
     "bias is numpy"),
    ("mix-conv-weight", lambda: F.conv2d(FakeCupy(x4), w4), DeviceError, "weight is numpy"),
    ("mix-conv-backward-y", lambda: F.conv2d_backward(FakeCupy(y4), FakeCupy(x4), FakeCupy(w4), y=y4,
                                                      activation="relu"), DeviceError, "y is numpy"),
    ("mix-relu-backward", lambda: F.relu_backward(rand(3), FakeCupy(rand(3))), DeviceError, "y is cupy"),
    ("mix-pool-backward-argmax", lambda: F.max_pool2d_backward(FakeCupy(rand(2, 3, 4, 4)), argmax, x4.shape),
     DeviceError, "argmax is numpy"),
    ("mix-softmax-labels", lambda: F.softmax_cross_entropy(FakeCupy(logits), labels), DeviceError,
     "labels is numpy"),
    ("mix-sgd-velocity", lambda: F.sgd_step(FakeCupy(rand(4)), FakeCupy(rand(4)), rand(4), lr=0.1, momentum=0.9),
     DeviceError, "velocity is numpy"),
    ("mix-out-on-host", lambda: F.tanh(FakeCupy(a2), out=rand(5, 7)), DeviceError, "must all be NumPy or all CuPy"),
    ("mix-out-on-device", lambda: F.sigmoid(a2, out=FakeCupy(rand(5, 7))), DeviceError,
     "must all be NumPy or all CuPy"),
    # foreign producers are placed from __dlpack_device__ before anything is imported
    ("mix-dlpack-gpu-and-numpy", lambda: F.matmul(FakeDlpack(2, 0), a2), DeviceError,
     "must all be on the CPU or all on one GPU"),
    ("mix-dlpack-cpu-and-cupy", lambda: F.relu_backward(FakeDlpack(1), FakeCupy(rand(2, 2))), DeviceError,
     "must all be on the CPU or all on one GPU"),
    ("dlpack-different-gpus", lambda: F.matmul(FakeDlpack(2, 0), FakeDlpack(2, 1)), DeviceError,
     "different GPUs (a on GPU 0, b on GPU 1)"),
    ("dlpack-gpu-and-cupy-on-other-gpu", lambda: F.relu_backward(FakeDlpack(2, 3), FakeCupy(rand(2, 2), 0)),
     DeviceError, "different GPUs"),
    ("dlpack-unknown-device", lambda: F.relu(FakeDlpack(8)), DeviceError, "DLPack device type 8"),
]


def _wrap(backend):
    return (lambda a: a) if backend == "cpu" else FakeCupy


MATRIX = [
    pytest.param(backend, call, error, text, id=f"{backend}-{name}")
    for backend in ("cpu", "gpu")
    for name, call, error, text in BOTH
] + [
    pytest.param(backend, (lambda w, _c=call: _c()), error, text, id=name)
    for backend, cases in (("cpu", CPU_ONLY), ("gpu", GPU_ONLY + MIXED))
    for name, call, error, text in cases
]


def _valid_call(backend, launches):
    """A correct call on the same backend: it must go through (CPU: and compute the right thing)."""
    if backend == "cpu":
        np.testing.assert_array_equal(F.relu(a2), np.maximum(a2, 0))
        assert launches == [("dlgpu.cpu", "relu")]
    else:
        F.relu(FakeCupy(a2))
        assert launches == [("dlgpu.cuda", "relu")]


@pytest.mark.parametrize("backend, call, error, text", MATRIX)
def test_refused_before_any_launch_and_the_process_keeps_working(launches, backend, call, error, text):
    with pytest.raises(error) as info:
        call(_wrap(backend))
    assert isinstance(info.value, DlgpuError)
    message = str(info.value)
    assert text in message, f"message {message!r} lacks {text!r}"
    op = message.split(":")[0]
    assert op in OPS, f"message {message!r} does not start with the op's name"
    assert launches == [], f"a refused call reached the backend: {launches}"
    _valid_call(backend, launches)


def test_the_matrix_is_large_and_covers_every_op_on_both_backends():
    assert len(MATRIX) >= 100
    ids = [p.id for p in MATRIX]
    assert len(set(ids)) == len(ids)
    source = "\n".join(repr(case[1].__code__.co_names) for case in BOTH + CPU_ONLY + GPU_ONLY + MIXED)
    for op in OPS:
        assert f"'{op}'" in source, f"no bad-input case calls {op}"


def test_gpu_arrays_without_cupy_are_refused_with_a_hint(monkeypatch, launches):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=r"relu: x \(.*FakeDlpack\) is on a GPU; .*needs CuPy"):
        F.relu(FakeDlpack(2, 0))
    with pytest.raises(BackendUnavailableError, match=r"matmul: a \(cupy.FakeCupy\) is on a GPU"):
        F.matmul(FakeCupy(a2), FakeCupy(b2), stream=0)
    assert launches == []


def test_refused_in_place_ops_leave_their_buffers_untouched(launches):
    param, velocity = rand(4, 3), rand(4, 3)
    before = param.copy(), velocity.copy()
    with pytest.raises(LayoutError):
        F.sgd_step(param, rand(4, 3), rand(4, 6)[:, ::2], lr=0.1, momentum=0.9)
    with pytest.raises(ShapeError):
        F.sgd_step(param, rand(4, 2), velocity, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(param, before[0])
    np.testing.assert_array_equal(velocity, before[1])
    out = np.full((5, 7), 7.0, np.float32)
    with pytest.raises(DtypeError):
        F.relu(rand(5, 7, dtype=np.float64), out=out)
    assert np.all(out == 7.0) and launches == []
