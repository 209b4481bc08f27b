"""The launch seam: launchers describe a launch, an executor carries it out.

A launcher in ``dlgpu/cuda/<stem>.py`` checks shapes, picks a configuration,
allocates outputs with ``executor.xp`` and builds a :class:`Launch`.  The
executor runs it: :class:`dlgpu.cuda.executor.CupyExecutor` on a GPU (NVRTC
cubin loaded into CuPy), or the CPU harness in ``dlgpu.testing.harness``
(the same .cu compiled by the host C++ compiler, run on NumPy buffers).
Launch math therefore runs, and is tested, on every CPU test.

This module is also the home of what every launcher shares: the device's SM
count, grid-stride grid sizes, the storage dtypes and their kernel-name
suffixes, the dtype and contiguity assertions, and output allocation (finding
the default executor is :func:`dlgpu.cuda.executor.resolve_executor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dlgpu.cuda import kernel_decls
from dlgpu.errors import ArgumentError, DtypeError, LayoutError, ShapeError
from dlgpu.precision import BFLOAT16, FLOAT16

INT32_MAX = 2**31 - 1  # the kernels index with 32-bit ints where they can
MAX_GRID_Y = 65535  # gridDim.y (and z) limit; launchers stride over what lies beyond it

# Threads per block of the grid-stride kernels: a multiple of 32 that leaves room for 4+ resident
# blocks per SM at <= 64 registers.
BLOCK = 256
# Blocks per SM for grid-stride kernels: enough threads to keep 16-byte loads in flight
# without a second partial wave of long-running blocks.
BLOCKS_PER_SM = 4
# SMs assumed when the executor has no device to ask (the CPU harness): an H100's count.
FALLBACK_MULTIPROCESSORS = 132
# Shared memory of one block (sm_80 and newer): static __shared__ arrays at most 48 KB; static
# plus dynamic at most 48 KB, unless the launch raises the kernel's dynamic limit
# (cudaFuncAttributeMaxDynamicSharedMemorySize: Launch.shared_opt_in), then up to 227 KB on
# sm_90 (163 KB on sm_80, 99 KB on sm_86/89: a launch near the top is for Hopper only).  Both
# executors hold launches to these: the CuPy one before the driver does, the CPU harness exactly.
SHARED_STATIC_LIMIT = 48 * 1024
SHARED_DEFAULT_LIMIT = 48 * 1024
SHARED_OPT_IN_LIMIT = 227 * 1024

# Storage dtype -> the suffix of its kernels' names (kernels/storage.cuh: STORAGE_TYPES instantiates
# the memory-bound kernels once per type, relu_forward_f32, relu_forward_bf16, ...).
STORAGE_SUFFIXES: dict[np.dtype, str] = {np.dtype(np.float32): "f32", BFLOAT16: "bf16", FLOAT16: "fp16"}
_STORAGE_DEFINES = kernel_decls.integer_defines("storage.cuh")
# Bytes of one vector load or store, and elements per chunk of the map_vec driver (a thread handles
# about one chunk per trip of the grid-stride loop).
VECTOR_BYTES = _STORAGE_DEFINES["VECTOR_BYTES"]
MAP_CHUNK = _STORAGE_DEFINES["MAP_CHUNK"]


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
    cluster:    (x, y, z) CTAs per thread-block cluster, as the kernel declares them
                with ``__cluster_dims__`` (a plain launch takes the kernel's own); the
                grid must be whole clusters, and the CPU harness checks that the kernel
                declares these
    """

    family: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]
    shared_mem: int = 0
    defines: tuple[tuple[str, str], ...] = field(default=())
    shared_opt_in: bool = False
    cluster: tuple[int, int, int] = (1, 1, 1)


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


# ---------------------------------------------------------------------------
# what every launcher shares
# ---------------------------------------------------------------------------

_multiprocessors: dict[int, int] = {}


def multiprocessor_count(executor) -> int:
    """SMs of the executor's current device; a constant for executors without one."""
    count = getattr(executor, "multiprocessor_count", None)
    if count is not None:
        return int(count)
    cuda = getattr(executor.xp, "cuda", None)
    if cuda is None:
        return FALLBACK_MULTIPROCESSORS
    device = cuda.runtime.getDevice()
    if device not in _multiprocessors:
        _multiprocessors[device] = int(cuda.Device(device).attributes["MultiProcessorCount"])
    return _multiprocessors[device]


def compute_capability(executor) -> int | None:
    """The compute capability of the executor's current device, major * 10 + minor (90 on an H100), or
    None for an executor without one: the CPU harness runs any arch's kernels unless it is told to plan
    for one (``HarnessExecutor(compute_capability=90)``).  Launchers read it to pick arch-only variants."""
    capability = getattr(executor, "compute_capability", None)
    if capability is not None:
        return int(capability)
    cuda = getattr(executor.xp, "cuda", None)
    if cuda is None:
        return None
    return int(cuda.Device().compute_capability)


def grid_stride_blocks(work_items: int, block: int, executor, blocks_per_sm: int = BLOCKS_PER_SM) -> int:
    """Blocks for a grid-stride loop over ``work_items``: one item per thread, at most a full device."""
    assert work_items >= 0 and block % 32 == 0, (work_items, block)
    wanted = max(1, math.ceil(work_items / block))
    return min(wanted, blocks_per_sm * multiprocessor_count(executor))


def storage_suffix(op: str, dtype) -> str:
    """The kernel-name suffix of ``dtype``'s instances ("f32", "bf16", "fp16")."""
    suffix = STORAGE_SUFFIXES.get(np.dtype(dtype))
    if suffix is None:
        names = ", ".join(d.name for d in STORAGE_SUFFIXES)
        raise DtypeError(f"{op}: the CUDA kernels take {names}, got {np.dtype(dtype).name}")
    return suffix


def require_storage(op: str, dtype, **arrays) -> None:
    """What every kernel relies on (dlgpu.functional has checked it for public calls): every array of
    ``dtype``, C-contiguous.  None entries (an absent optional operand) are skipped."""
    dtype = np.dtype(dtype)
    storage_suffix(op, dtype)
    for name, array in arrays.items():
        if array is None:
            continue
        if np.dtype(array.dtype) != dtype:
            raise DtypeError(f"{op}: {name} must be {dtype.name} for the CUDA kernels, got {np.dtype(array.dtype).name}")
        if not array.flags.c_contiguous:
            raise LayoutError(f"{op}: {name} must be C-contiguous")


def require_float32(op: str, **arrays) -> None:
    """:func:`require_storage` for float32: the kernels that take no 16-bit storage (products, convolutions)."""
    require_storage(op, np.float32, **arrays)


def output(op: str, executor, out, shape, dtype=np.float32):
    """``out`` when given (checked: shape, dtype, C-contiguous), else a new ``dtype`` array of ``executor.xp``."""
    shape = tuple(int(d) for d in shape)
    if out is None:
        return executor.xp.empty(shape, dtype=dtype)
    if tuple(out.shape) != shape:
        raise ShapeError(f"{op}: out has shape {tuple(out.shape)}, expected {shape}")
    require_storage(op, dtype, out=out)
    return out


def fast_divisor(d: int) -> tuple[int, int]:
    """(mul, shift) with n // d == (n * mul) >> shift for every 0 <= n < 2^31.

    shift = 31 + ceil(log2 d) and mul = ceil(2^shift / d) < 2^32: with e = mul*d - 2^shift
    in [0, d), n*mul / 2^shift = n/d + n*e / (d 2^shift), and the error term is below 1/d,
    too small to reach the next integer.
    """
    if not 1 <= d <= INT32_MAX:
        raise ArgumentError(f"fast_divisor needs 1 <= d < 2^31, got {d}")
    shift = 31 + (d - 1).bit_length()
    mul = -(-(1 << shift) // d)
    assert mul < 2**32
    return mul, shift


def fast_divisors(*divisors: int) -> tuple[np.uint32, ...]:
    """The kernel arguments (mul, shift) of each divisor, in order, for kernels/common.cuh's fast_div."""
    return tuple(np.uint32(v) for d in divisors for v in fast_divisor(d))
