"""The device error flag: kernels report a bad index in it, so that no op reads indices back (dlgpu.device_errors).

kernels/common.cuh (``report_bad_index``) lays it out: ``DLGPU_ERROR_WORDS``
64-bit words, [0] the code of what was found (0: nothing), [1] the index, [2]
the bound it broke, [3] where it was.  There is one flag per GPU, shared by
every executor and stream on it, and one for the CPU harness (NumPy memory:
its launches run on the host).  The launchers pass :func:`flag` to every
kernel that reports; :func:`raise_reported`, which ``dlgpu.check_errors``
calls, reads the flags and turns a record back into the error the host check
would have raised (:class:`dlgpu.ops.validate.IndexCheck`).

A GPU's flag is a cudaMalloc of its own, outside CuPy's memory pools and any
allocator a caller has set (a CUDA graph's private pool, say): it lives as
long as the process, so a captured graph may keep its address.  The first
reporting launch on a GPU makes it and zeroes it on the current stream, ahead
of the launch.  That cannot happen inside a stream capture (the zeroing would
become a node of the graph, and the flag would hold garbage until a replay),
so it is refused there: run the step once before capturing it, which a
capture needs anyway to compile and load its kernels.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from dlgpu.cuda.kernel_decls import integer_defines
from dlgpu.errors import ArgumentError, DeviceError

WORDS = integer_defines("common.cuh")["DLGPU_ERROR_WORDS"]
HOST = "host"  # the CPU harness's flag, beside the GPUs' (keyed by device id)

_flags: dict = {}
_lock = threading.Lock()


def flag(executor):
    """The flag a launch by ``executor`` reports into: its current GPU's, or the host's for the harness."""
    cuda = getattr(executor.xp, "cuda", None)  # CuPy has it; the harness's NumPy has not
    key = HOST if cuda is None else int(cuda.runtime.getDevice())
    made = _flags.get(key)
    if made is not None:
        return made
    with _lock:
        if key not in _flags:
            _flags[key] = np.zeros(WORDS, np.uint64) if key == HOST else _device_flag(key)
        return _flags[key]


def _device_flag(device: int):
    import cupy

    if cupy.cuda.get_current_stream().is_capturing():
        raise DeviceError(
            f"dlgpu: the first softmax or pooling-backward launch on GPU {device} is being captured into a CUDA "
            "graph, but it must make the GPU's error flag first, which a capture cannot hold; run the step once "
            "before capturing it (which also compiles and loads its kernels)"
        )
    memory = cupy.cuda.Memory(WORDS * np.dtype(np.uint64).itemsize)
    array = cupy.ndarray((WORDS,), dtype=np.uint64, memptr=cupy.cuda.MemoryPointer(memory, 0))
    array.fill(0)
    return array


def raise_reported() -> None:
    """Raise the error recorded in the host's flag or the current GPU's, and clear that flag; see dlgpu.check_errors."""
    for key, array in list(_flags.items()):
        if key == HOST:
            record = array.copy()
        else:
            import cupy

            if cupy.cuda.runtime.getDevice() != key or cupy.cuda.get_current_stream().is_capturing():
                continue
            record = array.get()  # waits for the current stream's work
        if record[0] != 0:
            array.fill(0)
            raise error_of(record)


def error_of(record: np.ndarray) -> ArgumentError:
    """The error a flag's record stands for."""
    code, index, bound, where = (int(v) for v in np.asarray(record, np.uint64).view(np.int64)[:4])
    check = _checks().get(code)
    if check is None:
        return ArgumentError(f"dlgpu: a kernel reported error code {code}, which no op declares "
                             f"(index {index}, bound {bound}, position {where})")
    return check.error(index, bound, where)


@functools.lru_cache(maxsize=None)
def _checks() -> dict:
    """The declared IndexChecks by the number their code has in the kernels."""
    import dlgpu.functional  # noqa: F401 - each stem's ops declare their IndexChecks when imported
    from dlgpu.ops.validate import INDEX_CHECKS

    return {integer_defines(f"{check.family}.cu")[check.code]: check for check in INDEX_CHECKS}
