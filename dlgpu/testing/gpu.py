"""GPU test helpers: poisoned outputs, a record of the kernels launched, and misaligned device views.

Used by the ``gpu``-marked tests only; importing this module needs no CuPy.
"""

from __future__ import annotations

import numpy as np

from dlgpu.testing.harness import PoisonedArrays


class PoisonExecutor:
    """The default CuPy executor, except that outputs the launchers allocate start poisoned as the
    harness's do (every byte 0xFF: NaN, or -1 for signed integers), so an element a kernel forgets to
    write fails the comparison; ``launched`` records every kernel name in order."""

    def __init__(self, cupy):
        from dlgpu.cuda.executor import default_executor

        self._inner = default_executor()
        self.launched: list[str] = []
        self.xp = PoisonedArrays(cupy)

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
