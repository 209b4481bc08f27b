"""The CPU backend: NumPy's BLAS for products, numba-compiled parallel loops for the rest.

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

# numba's OpenMP workers spin after each parallel loop by default, and every op
# here alternates numba loops with NumPy's BLAS, whose own threads then find the
# cores taken: on a small or shared machine that costs 10x and more (measured:
# LeNet conv forward+backward 40 ms spinning, 2.3 ms passive, with one other busy
# process on 2 cores).  Passive workers sleep instead.  setdefault keeps a
# user's own choice.  It takes effect only if no OpenMP runtime has started in
# the process yet (numba starts one at its first parallel call, not at import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dlgpu.cpu.storage import StorageOps  # noqa: E402 - after the OpenMP policy above
from dlgpu.precision import HALF_DTYPES  # noqa: E402


class CpuBackend(StorageOps):
    """NumPy and numba on the host."""

    name = "dlgpu.cpu"
    float_dtypes = (np.float32, np.float64, *HALF_DTYPES)

    @staticmethod
    def index_range(indices) -> tuple[int, int]:
        return int(indices.min()), int(indices.max())


BACKEND = CpuBackend()
