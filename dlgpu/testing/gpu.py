"""GPU test helpers: poisoned outputs, a record of the kernels launched, and misaligned device views.

Used by the ``gpu``-marked tests only; importing this module needs no CuPy.
"""

from __future__ import annotations


import numpy as np


class PoisonExecutor:
    """The default CuPy executor, except that outputs the launchers allocate start as NaN (-7 for
    signed integers, all ones for unsigned ones: the NaN pattern of the 16- and 32-bit floats they
    store), so an element a kernel forgets to write fails the comparison; ``launched`` records every
    kernel name in order.  Its ``xp`` is CuPy with ``empty`` poisoned."""

    def __init__(self, cupy):
        from dlgpu.cuda.executor import default_executor

        self._inner = default_executor()
        self.launched: list[str] = []

        self.xp = _PoisonedEmpty(cupy)

    def launch(self, launch):
        self.launched.append(launch.kernel)
        self._inner.launch(launch)


def poison_value(dtype):
    """What ``PoisonExecutor`` fills a new ``dtype`` array with: never a value a kernel would write."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "u":  # bf16/fp16 storage as uint16, f32 bits as uint32: all ones is a NaN
        return np.iinfo(dtype).max
    return -7


class _PoisonedEmpty:
    """CuPy, except that ``empty`` fills with ``poison_value``: the launchers' ``executor.xp``."""

    def __init__(self, cupy):
        self._cupy = cupy

    def empty(self, shape, dtype=np.float32):
        return self._cupy.full(shape, poison_value(dtype), dtype=dtype)

    def __getattr__(self, name):
        return getattr(self._cupy, name)


def device_view(cp, host: np.ndarray, offset: int):
    """A copy of ``host`` on the GPU, starting ``offset`` elements into its own buffer (offset 1: misaligned)."""
    flat = cp.empty(host.size + offset, dtype=host.dtype)
    view = flat[offset:].reshape(host.shape)
    view[...] = cp.asarray(host)
    return view


def poisoned(cp, shape, offset: int = 0, dtype=np.float32):
    """A NaN-filled device array of ``shape``, ``offset`` elements into its buffer."""
    flat = cp.full(int(np.prod(shape)) + offset, np.nan, dtype=dtype)
    return flat[offset:].reshape(shape)
