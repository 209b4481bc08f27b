"""The launch seam: launchers describe a launch, an executor carries it out.

A launcher in ``dlgpu/cuda/<stem>.py`` checks shapes, picks a configuration,
allocates outputs with ``executor.xp`` and builds a :class:`Launch`.  The
executor runs it: :class:`dlgpu.cuda.executor.CupyExecutor` on a GPU (NVRTC
cubin loaded into CuPy), or the CPU harness in ``dlgpu.testing.harness``
(the same .cu compiled by the host C++ compiler, run on NumPy buffers).
Launch math therefore runs, and is tested, on every CPU test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully described.

    family:     the stem of the source, ``"elementwise"`` -> kernels/elementwise.cu
    kernel:     the ``extern "C" __global__`` function's name in that source
    grid:       (x, y, z) blocks
    block:      (x, y, z) threads per block
    args:       kernel arguments in order: arrays (NumPy or CuPy, passed as
                device pointers) and NumPy scalars (np.int32, np.int64,
                np.float32, ...), whose type is the C type of the parameter
    shared_mem: dynamic shared memory in bytes
    defines:    compile-time ``-D`` definitions, name -> value; part of the
                compiled module's identity
    """

    family: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]
    shared_mem: int = 0
    defines: tuple[tuple[str, str], ...] = field(default=())


class Executor(Protocol):
    """Something that can carry out a :class:`Launch` on arrays of its ``xp``."""

    xp: Any  # numpy or cupy: launchers allocate their outputs with it

    def launch(self, launch: Launch) -> None: ...
