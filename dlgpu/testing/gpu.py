"""GPU test helpers: poisoned outputs, a record of the kernels launched, and misaligned device views.

Used by the ``gpu``-marked tests only; importing this module needs no CuPy.
"""

from __future__ import annotations

import types

import numpy as np


class PoisonExecutor:
    """The default CuPy executor, except that outputs the launchers allocate start as NaN (-7 for
    integers), so an element a kernel forgets to write fails the comparison; ``launched`` records
    every kernel name in order."""

    def __init__(self, cupy):
        from dlgpu.cuda.executor import default_executor

        self._inner = default_executor()
        self.launched: list[str] = []

        def empty(shape, dtype=np.float32):
            dtype = np.dtype(dtype)
            return cupy.full(shape, np.nan if dtype.kind == "f" else -7, dtype=dtype)

        self.xp = types.SimpleNamespace(empty=empty, cuda=cupy.cuda)

    def launch(self, launch):
        self.launched.append(launch.kernel)
        self._inner.launch(launch)


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
