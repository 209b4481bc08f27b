"""Two questions many parts of dlgpu ask: is this a CuPy array (and so which array module), and is there a GPU?

Both are answered here and nowhere else.  Neither imports CuPy to answer the
first (a CuPy array's type lives in the ``cupy`` package, so CuPy is already
imported when one exists), and the second never raises: a missing CuPy, a
missing driver and a machine without a device all come back as a reason.
Nothing is cached, so a test that hides CuPy (``sys.modules["cupy"] = None``)
sees the answer change.
"""

from __future__ import annotations


def is_cupy(obj) -> bool:
    """A CuPy array (by its type's package, so asking imports nothing)."""
    return type(obj).__module__.split(".")[0] == "cupy" and hasattr(obj, "device")


def array_module(array):
    """numpy for a NumPy array, cupy for a CuPy array (CuPy is imported already when one exists)."""
    if is_cupy(array):
        import sys

        return sys.modules["cupy"]
    import numpy

    return numpy


def gpu_unavailable_reason() -> str | None:
    """None when CuPy imports and sees a CUDA device; otherwise why not, in words."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install failing in its own way
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    if cupy is None:  # blocked through sys.modules
        return "CuPy is not importable (blocked)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own runtime error types when no driver is present
        return f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "CuPy sees no CUDA device"


def gpu_available() -> bool:
    """Whether the CUDA backend has a device to run on."""
    return gpu_unavailable_reason() is None


def gpu_probe() -> tuple[bool, str]:
    """(True, the current device's name) when there is a GPU, else (False, why not)."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        return False, reason
    import cupy

    try:
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    except Exception as exc:  # a device that cannot be queried is not usable
        return False, f"CuPy sees no usable CUDA device ({type(exc).__name__}: {exc})"
    return True, name.decode() if isinstance(name, bytes) else str(name)
