"""The typed interface between the public ops and the two backends that run them.

:class:`Backend` is what ``dlgpu.functional`` calls once it has validated a
call: each stem's part of it (``GemmBackend``, ``Conv2dBackend``, ...) lives
beside that stem's public ops in ``dlgpu/ops/<stem>.py``, so the names and
signatures of the ops are written there and composed here, never listed
again.  ``dlgpu.cpu.BACKEND`` (NumPy/numba) and ``dlgpu.cuda.BACKEND`` (our
kernels) implement it; :func:`dlgpu.ops.validate.select` picks one from the
arrays of a call.

Backend methods take positional arguments already normalized: C-contiguous
arrays of one supported floating dtype, (h, w) pairs, a resolved precision.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

from dlgpu.ops.conv2d import Conv2dBackend
from dlgpu.ops.elementwise import ElementwiseBackend
from dlgpu.ops.gemm import GemmBackend
from dlgpu.ops.pool import PoolBackend
from dlgpu.ops.sgd import SgdBackend
from dlgpu.ops.softmax import SoftmaxBackend


@runtime_checkable
class Backend(GemmBackend, Conv2dBackend, ElementwiseBackend, PoolBackend, SoftmaxBackend, SgdBackend, Protocol):
    """One way of running every op: its name, its dtypes, and each stem's functions."""

    name: str  # "dlgpu.cpu" or "dlgpu.cuda", as error messages name it
    float_dtypes: tuple[type, ...]

    def index_range(self, indices) -> tuple[int, int] | None:
        """(min, max) of an index array for the range checks before a launch; None when it cannot be
        read back now (a CUDA graph is being captured), so the check is skipped."""


def _members(part) -> list[str]:
    return [name for name, value in vars(part).items() if inspect.isfunction(value) and not name.startswith("_")]


# Every op a backend runs, stem by stem, in the order the stems compose Backend.
OPS: tuple[str, ...] = tuple(name for part in Backend.__bases__ if part is not Protocol for name in _members(part))
