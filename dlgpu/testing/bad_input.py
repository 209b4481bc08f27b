"""Bad input: stand-ins for GPU arrays, small arrays to misuse, and the check every refusal passes.

Each stem declares its bad inputs beside its other cases (``bad_inputs()`` in
dlgpu/cases/<stem>.py): a call that must be refused, the DlgpuError subclass,
and text the message must contain.  :func:`assert_refused` runs one with every
backend function replaced by a spy (:func:`spy_on_backends`): the call must be
refused with that class and text, name the op first, and reach no backend
function; then a valid call on the same backend must go through, so the
process keeps working.

The CUDA backend's cases run on a CPU-only machine with :class:`FakeCupy`, a
stand-in whose type's module is ``cupy`` (how dlgpu recognises a CuPy array)
wrapping NumPy memory: validation never touches CuPy itself.  Foreign arrays
(DLPack or CUDA-array-interface producers) are small stand-ins too.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from dlgpu.errors import DlgpuError


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


class FakeGpuTensor:
    """Looks like a GPU tensor of another framework (exposes only the CUDA array interface)."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False), "version": 3}


# ---------------------------------------------------------------------------
# arrays to misuse
# ---------------------------------------------------------------------------

_rng = np.random.default_rng(8)


def rand(*shape, dtype=np.float32):
    return _rng.standard_normal(shape).astype(dtype)


def readonly(*shape):
    a = rand(*shape)
    a.flags.writeable = False
    return a


x4, w4 = rand(2, 3, 8, 8), rand(4, 3, 3, 3)  # an NCHW batch and an OIHW filter for it: y is (2, 4, 6, 6)
y4 = np.abs(rand(2, 4, 6, 6))
a2, b2 = rand(5, 7), rand(7, 3)
logits, labels = rand(4, 10), np.array([0, 3, 9, 2], np.int64)
buffer = rand(5, 7)  # shared by cases that alias an output with an input
argmax = np.zeros((2, 3, 4, 4), np.int32)


# ---------------------------------------------------------------------------
# one refusal
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """A call that must be refused: ``call(wrap)``, where ``wrap`` puts a NumPy array on the backend under
    test; or, for a case of one backend only, ``call()`` with the arrays it needs written in."""

    id: str
    call: Callable[..., Any]
    error: type
    text: str  # the message must contain it
    backends: tuple[str, ...] = ("cpu", "gpu")

    def run(self, wrap: Callable[[np.ndarray], Any]) -> None:
        self.call(wrap) if len(self.backends) > 1 else self.call()

    def test_id(self, backend: str) -> str:
        return f"{backend}-{self.id}" if len(self.backends) > 1 else self.id


def in_debug_mode(op: Callable[..., Any], *args, **kwargs) -> Any:
    """``op(*args, **kwargs)`` in dlgpu's debug mode, where the CUDA backend too checks indices on the host
    before a launch (outside it, its kernels check them: dlgpu.device_errors).  The CPU backend always checks them."""
    from dlgpu.device_errors import debug

    with debug():
        return op(*args, **kwargs)


def on_cpu(id_: str, call: Callable[[], Any], error: type, text: str) -> BadInput:
    """A bad input of NumPy arrays only (read-only buffers, a stream given to the CPU, ...)."""
    return BadInput(id_, call, error, text, ("cpu",))


def on_gpu(id_: str, call: Callable[[], Any], error: type, text: str) -> BadInput:
    """A bad input of (stand-in) GPU arrays: other devices, host/device mixes, foreign producers."""
    return BadInput(id_, call, error, text, ("gpu",))


def spy_on_backends(monkeypatch) -> list[tuple[str, str]]:
    """Replace every op of both backends by a spy that records (backend name, op); CPU spies still
    compute, CUDA spies return None.  Returns the record."""
    import dlgpu.cpu
    import dlgpu.cuda
    from dlgpu.backend import OPS

    record: list[tuple[str, str]] = []
    for backend in (dlgpu.cpu.BACKEND, dlgpu.cuda.BACKEND):
        for name in OPS:
            real = getattr(backend, name)

            def spy(*args, _real=real, _name=name, _backend=backend):
                record.append((_backend.name, _name))
                return _real(*args) if _backend is dlgpu.cpu.BACKEND else None

            monkeypatch.setattr(backend, name, spy)
    return record


def assert_refused(case: BadInput, backend: str, record: list) -> None:
    """``case`` is refused on ``backend`` ("cpu" or "gpu") before any backend function runs, with the
    right class and a message that starts with the op's name; then a valid call goes through."""
    import dlgpu.functional as F
    from dlgpu.backend import OPS

    wrap = (lambda a: a) if backend == "cpu" else FakeCupy
    try:
        case.run(wrap)
    except case.error as exc:
        message = str(exc)
        assert isinstance(exc, DlgpuError), f"{case.id}: {type(exc).__name__} is not a DlgpuError"
    else:
        raise AssertionError(f"{case.id}: the call was not refused (expected {case.error.__name__})")
    assert case.text in message, f"message {message!r} lacks {case.text!r}"
    assert message.split(":")[0] in OPS, f"message {message!r} does not start with the op's name"
    assert record == [], f"a refused call reached the backend: {record}"
    if backend == "cpu":
        np.testing.assert_array_equal(F.relu(a2), np.maximum(a2, 0))
        assert record == [("dlgpu.cpu", "relu")]
    else:
        F.relu(FakeCupy(a2))
        assert record == [("dlgpu.cuda", "relu")]
    record.clear()
