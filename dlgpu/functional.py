"""The public ops.  Each one validates every argument, then runs on the backend its arrays choose.

NumPy arrays run on the CPU backend (``dlgpu.cpu``), CuPy arrays on the CUDA
backend (``dlgpu.cuda``); both implement :class:`dlgpu.backend.Backend`.  Each
stem's ops are written, with their checks, in ``dlgpu/ops/<stem>.py`` and
gathered here.  Arrays of other frameworks are wrapped without a
copy first (:mod:`dlgpu.interop`: DLPack or ``__cuda_array_interface__``, so
PyTorch, JAX and Numba arrays work) and results come back in the caller's
framework.  Arrays on the host and on a GPU in one call are an error, never a
copy.  Nothing is broadcast, truncated or cast: operands share one floating
dtype and no dimension is empty.  Every check happens before any work, so a
refused call leaves nothing half-done -- but for the range of indices (labels,
argmax) on GPU arrays, which only the kernels can check without waiting for
the GPU: a bad one is raised by ``dlgpu.check_errors()`` after the call, or at
the call in debug mode (:mod:`dlgpu.device_errors`).

Layouts (non-contiguous inputs).  The kernels read C-contiguous memory, so a
strided input (a transposed or sliced view) is never read as if it were
contiguous.  ``matmul`` takes a transposed 2-D view as it is, by flipping its
``transpose_*`` flag; every other strided *input* is copied once into a
contiguous buffer (the cost of one read and write of that array).  Buffers
the op *writes* -- ``out=``, and ``sgd_step``'s ``param`` and ``velocity`` --
must be C-contiguous: a copy would silently drop the write, so they are
refused with LayoutError.

Streams.  Every op takes ``stream=``: GPU work launches on it (a CuPy stream,
a ``torch.cuda.Stream``, anything with ``__cuda_stream__``, or a raw handle);
by default on CuPy's current stream, or on ``torch.cuda.current_stream()``
for PyTorch CUDA tensors.  NumPy calls refuse a stream.

Layouts follow PyTorch: activations NCHW, filters OIHW, linear weights
(out_features, in_features).  ``max_pool2d``'s argmax is int32: the position
h * W + w of the chosen element in its unpadded (n, c) input plane.

>>> import numpy as np, dlgpu.functional as F
>>> x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
>>> F.relu(x)
array([[0., 0., 0.],
       [1., 2., 3.]], dtype=float32)
"""

from __future__ import annotations

from dlgpu.ops.conv2d import *  # noqa: F403 - each stem's public ops live in dlgpu/ops/<stem>.py
from dlgpu.ops.elementwise import *  # noqa: F403
from dlgpu.ops.gemm import *  # noqa: F403
from dlgpu.ops.mse import *  # noqa: F403
from dlgpu.ops.pool import *  # noqa: F403
from dlgpu.ops.sgd import *  # noqa: F403
from dlgpu.ops.softmax import *  # noqa: F403
from dlgpu.backend import OPS

# The public ops are the Backend protocol's, by name (dlgpu.backend, the one op table).
__all__ = list(OPS)
