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

from dlgpu.errors import ArgumentError

# Shared memory of one block (sm_80 and newer): static __shared__ arrays at most 48 KB; static
# plus dynamic at most 48 KB, unless the launch raises the kernel's dynamic limit
# (cudaFuncAttributeMaxDynamicSharedMemorySize: Launch.shared_opt_in), then up to 227 KB on
# sm_90 (163 KB on sm_80, 99 KB on sm_86/89: a launch near the top is for Hopper only).  Both
# executors hold launches to these: the CuPy one before the driver does, the CPU harness exactly.
SHARED_STATIC_LIMIT = 48 * 1024
SHARED_DEFAULT_LIMIT = 48 * 1024
SHARED_OPT_IN_LIMIT = 227 * 1024


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
    shared_opt_in: the launcher raises the kernel's dynamic shared memory limit to
                ``shared_mem`` before launching, which a block needs past 48 KB of
                static plus dynamic shared memory (the device refuses the launch
                otherwise; so do both executors)
    """

    family: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]
    shared_mem: int = 0
    defines: tuple[tuple[str, str], ...] = field(default=())
    shared_opt_in: bool = False


class Executor(Protocol):
    """Something that can carry out a :class:`Launch` on arrays of its ``xp``."""

    xp: Any  # numpy or cupy: launchers allocate their outputs with it

    def launch(self, launch: Launch) -> None: ...


def shared_memory_limit(launch: Launch) -> int:
    """The static plus dynamic shared memory a block of ``launch`` may have."""
    return SHARED_OPT_IN_LIMIT if launch.shared_opt_in else SHARED_DEFAULT_LIMIT


def check_shared_memory(launch: Launch, where: str) -> None:
    """Refuse a launch whose dynamic shared memory alone is more than a block may have."""
    limit = shared_memory_limit(launch)
    if launch.shared_mem > limit:
        why = "the launch does not opt in (shared_opt_in)" if not launch.shared_opt_in else "no device grants more"
        raise ArgumentError(f"{where}: {launch.shared_mem} B of dynamic shared memory is over {limit} B: {why}")
