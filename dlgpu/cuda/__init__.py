"""The CUDA backend: our kernels (kernels/*.cu), compiled by NVRTC and launched through CuPy.

:data:`BACKEND` implements :class:`dlgpu.backend.Backend`; dlgpu.functional
picks it for CuPy arrays and calls it with arguments already validated and
normalized (C-contiguous arrays of one storage dtype -- float32, bfloat16 or
float16 -- pairs for stride/padding, precision resolved; the convolutions'
arrays may be channels_last at a tensor-core precision: takes_channels_last).  Each stem's launchers
live in ``dlgpu/cuda/<stem>.py`` and lend the backend their functions through a
small ``<Stem>Ops`` class.  Importing this package needs neither CuPy nor a GPU: the executor, which does, is made
on the first launch.
"""

from __future__ import annotations

import sys

import numpy as np

from dlgpu.cuda.conv2d import Conv2dOps, takes_channels_last
from dlgpu.cuda.elementwise import ElementwiseOps
from dlgpu.cuda.gemm import GemmOps
from dlgpu.cuda.mse import MseOps
from dlgpu.cuda.pool import PoolOps
from dlgpu.cuda.sgd import SgdOps
from dlgpu.cuda.softmax import SoftmaxOps
from dlgpu.device_errors import debug_enabled
from dlgpu.precision import HALF_DTYPES


class CudaBackend(GemmOps, Conv2dOps, ElementwiseOps, PoolOps, SoftmaxOps, MseOps, SgdOps):
    """dlgpu's kernels on CuPy arrays."""

    name = "dlgpu.cuda"
    # bfloat16 CuPy arrays need CuPy 14 with ml_dtypes (CuPy 13 has no such dtype).
    float_dtypes = (np.float32, *HALF_DTYPES)

    @staticmethod
    def index_range(indices) -> tuple[int, int] | None:
        """(min, max) of a device index array in debug mode only: reading it back waits for the
        device.  Otherwise None, and always while the stream is being captured into a CUDA graph
        (nothing may be read back then): the kernels that take indices never use a bad one (softmax
        writes NaN for its row, pooling's backward routes nothing through it) and report the first
        in the device error flag, which dlgpu.check_errors reads (dlgpu.device_errors)."""
        if not debug_enabled():
            return None
        cupy = sys.modules.get("cupy")  # a CuPy array means CuPy is imported already
        if cupy is not None and cupy.cuda.get_current_stream().is_capturing():
            return None
        return int(indices.min()), int(indices.max())

    @staticmethod
    def memory_bytes() -> int | None:
        """The current GPU's total memory (free memory moves with CuPy's pool, which gives blocks back)."""
        cupy = sys.modules.get("cupy")
        if cupy is None:
            return None
        return int(cupy.cuda.Device().mem_info[1])

    takes_channels_last = staticmethod(takes_channels_last)  # the NHWC tensor-core kernels (dlgpu.cuda.conv2d)


BACKEND = CudaBackend()
