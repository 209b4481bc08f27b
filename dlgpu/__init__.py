"""dlgpu: hand-written CUDA kernels for the core of deep learning.

A functional API (``dlgpu.functional``) runs each op on the backend chosen
by its arrays: NumPy arrays on the CPU backend (numba kernels, one pool of threads),
CuPy arrays on the CUDA backend (our kernels, compiled with NVRTC).
``dlgpu.reference`` computes every op in float64 NumPy as the oracle.

No op waits for the GPU: a bad class label or pooling argmax is found by the
kernels and raised by :func:`check_errors` (or :func:`synchronize`) where the
caller synchronizes; ``with dlgpu.debug():`` (or ``DLGPU_DEBUG=1``) checks on
the host at each call instead (:mod:`dlgpu.device_errors`).
"""

from dlgpu.device_errors import check_errors, debug, debug_enabled, synchronize
from dlgpu.errors import (
    ArgumentError,
    BackendUnavailableError,
    CompileError,
    DeviceError,
    DlgpuError,
    DtypeError,
    LayoutError,
    ShapeError,
)
from dlgpu.kernel_files import kernel_sources, kernels_dir, kernels_sha256

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "BackendUnavailableError",
    "CompileError",
    "DeviceError",
    "DlgpuError",
    "DtypeError",
    "LayoutError",
    "ShapeError",
    "check_errors",
    "debug",
    "debug_enabled",
    "get_default_precision",
    "kernel_sources",
    "kernels_dir",
    "kernels_sha256",
    "set_default_precision",
    "synchronize",
    "__version__",
]


def __getattr__(name: str):
    # The precision defaults live beside the 16-bit dtypes (NumPy, ml_dtypes): imported on first use, so that
    # `import dlgpu` itself needs no third-party package (an installed wheel can say where its kernels are).
    if name in ("get_default_precision", "set_default_precision"):
        from dlgpu import precision

        return getattr(precision, name)
    raise AttributeError(f"module 'dlgpu' has no attribute {name!r}")
