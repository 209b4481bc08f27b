"""The CPU backend: numba-compiled parallel loops on one pool of threads.

For users without a GPU, and the backend dlgpu.functional picks for NumPy
arrays: :data:`BACKEND` implements :class:`dlgpu.backend.Backend`.  Its
functions take positional arguments already validated and normalized by
dlgpu.functional (C-contiguous, one dtype, pairs for stride/padding/dilation,
precision resolved); outputs have the inputs' dtype.  Each stem's module
(``dlgpu/cpu/<stem>.py``) says how its ops are computed and why, and lends the
backend its functions through a small ``<Stem>Ops`` class; float16 and
bfloat16 arrays go through those in float32 (``dlgpu/cpu/storage.py``).
"""

import os

import numpy as np

from dlgpu.cpu.threads import start_pool

# Before any kernel runs: numba's threads must load asleep-when-idle (threads.py says why and how).
start_pool()

from dlgpu.cpu.storage import StorageOps  # noqa: E402 - after the pool has started (it imports the stems)
from dlgpu.precision import HALF_DTYPES  # noqa: E402


class CpuBackend(StorageOps):
    """NumPy and numba on the host."""

    name = "dlgpu.cpu"
    float_dtypes = (np.float32, np.float64, *HALF_DTYPES)

    @staticmethod
    def index_range(indices) -> tuple[int, int]:
        return int(indices.min()), int(indices.max())

    @staticmethod
    def memory_bytes() -> int | None:
        try:  # physical RAM: a result larger than that cannot be allocated, swap or not
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system that says
            return None

    @staticmethod
    def takes_channels_last(precision: str) -> bool:
        return False  # its convolutions index NCHW: dlgpu.ops.conv2d copies channels_last arrays first


BACKEND = CpuBackend()
