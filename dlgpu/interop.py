"""Arrays from other frameworks in, results back in the caller's framework.

dlgpu's backends run on NumPy arrays (the CPU backend) and CuPy arrays (the
CUDA backend).  Any other array that speaks DLPack (``__dlpack__`` and
``__dlpack_device__``: PyTorch, JAX, ...) or the CUDA array interface
(``__cuda_array_interface__``: Numba device arrays, ...) is wrapped without
a copy before validation:

* DLPack on the CPU (a torch CPU tensor)          -> ``np.from_dlpack``
* DLPack on a CUDA GPU (a torch CUDA tensor)      -> ``cupy.from_dlpack``
* only ``__cuda_array_interface__``               -> ``cupy.asarray``

bfloat16 is the one dtype DLPack carries that NumPy and CuPy 13 cannot import
("Unsupported dtype in DLTensor"), so bfloat16 arrays cross as int16 (the same
bits) and are viewed as ``ml_dtypes.bfloat16`` on our side:

* a torch bfloat16 tensor: ``tensor.view(torch.int16)``, a view (no copy);
* a JAX bfloat16 array: ``jax.lax.bitcast_convert_type(array, jnp.int16)``, a
  new JAX array of the same bits (JAX arrays are immutable, so this costs JAX
  one copy of the array on its device).

A bfloat16 result goes back the same way: torch in -> a torch bfloat16 tensor
(a view of the int16 tensor), JAX in -> a JAX bfloat16 array (bitcast on JAX's
side).  Both work on the CPU backend and on a GPU.

All three honour the producer's strides: a transposed or sliced tensor
arrives as a strided view, which ``dlgpu.functional`` then handles or copies
as each op documents; nothing reads it as if it were contiguous.  The GPU
imports happen with the op's stream current, so the producer's pending work
on its own stream is ordered before ours (DLPack's ``stream=`` handshake;
CuPy synchronizes on a CUDA-array-interface ``stream`` entry).

Results come back in the caller's framework where that costs no copy: torch
in -> torch out (``torch.from_dlpack``), JAX in -> JAX out
(``jax.numpy.from_dlpack``), a Numba device array in -> a Numba device array
out (``numba.cuda.as_cuda_array``).  An ``out=`` buffer of another framework
is written through its zero-copy view and handed back as the caller's own
object.

Streams: GPU ops launch on CuPy's current stream unless ``stream=`` names
another: a CuPy stream, anything exposing ``__cuda_stream__`` or a
``cuda_stream`` handle (``torch.cuda.Stream``), or a raw ``cudaStream_t``
int.  When a PyTorch CUDA tensor is among the inputs and no stream is given,
the op runs on ``torch.cuda.current_stream()`` (through
``cupy.cuda.ExternalStream``), so it is ordered with the caller's PyTorch
work.  CPU (NumPy) calls refuse ``stream=``: there is nothing to order.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any

import numpy as np

from dlgpu.device import is_cupy
from dlgpu.errors import ArgumentError, BackendUnavailableError, DeviceError, install_hint
from dlgpu.precision import BFLOAT16

# DLPack device types (dlpack.h, DLDeviceType).
DLPACK_CPU = 1
DLPACK_CUDA = 2
DLPACK_CUDA_HOST = 3
DLPACK_CUDA_MANAGED = 13
_CPU_DEVICES = (DLPACK_CPU, DLPACK_CUDA_HOST)
_GPU_DEVICES = (DLPACK_CUDA, DLPACK_CUDA_MANAGED)


# ---------------------------------------------------------------------------
# classifying
# ---------------------------------------------------------------------------


def is_native(obj) -> bool:
    """An array a backend takes as it is: NumPy or CuPy."""
    return isinstance(obj, np.ndarray) or is_cupy(obj)


def is_foreign(obj) -> bool:
    """An array of another framework that can be wrapped without a copy."""
    if is_native(obj) or isinstance(obj, type):
        return False
    return hasattr(obj, "__dlpack__") or hasattr(obj, "__cuda_array_interface__")


def framework(obj) -> str:
    """The top-level package of the object's type: 'torch', 'jax', 'numba', ..."""
    module = type(obj).__module__.split(".")[0]
    return "jax" if module == "jaxlib" else module


def describe(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def location(op: str, name: str, obj) -> tuple[str, int | None]:
    """('cpu', None) or ('gpu', device id or None when unknown) for a native or foreign array."""
    if isinstance(obj, np.ndarray):
        return "cpu", None
    if is_cupy(obj):
        return "gpu", int(obj.device.id)
    if hasattr(obj, "__dlpack_device__"):
        try:
            device_type, device_id = obj.__dlpack_device__()
        except Exception as exc:  # a producer's own error type
            raise DeviceError(f"{op}: {name} ({describe(obj)}) cannot say where it lives: {exc}") from exc
        device_type = int(device_type)
        if device_type in _CPU_DEVICES:
            return "cpu", None
        if device_type in _GPU_DEVICES:
            return "gpu", int(device_id)
        raise DeviceError(
            f"{op}: {name} ({describe(obj)}) lives on DLPack device type {device_type}; "
            "dlgpu runs on the CPU (NumPy) and on CUDA GPUs (CuPy)"
        )
    if hasattr(obj, "__cuda_array_interface__"):
        return "gpu", None
    return "cpu", None  # __dlpack__ without __dlpack_device__: older producers are host-only


# ---------------------------------------------------------------------------
# converting
# ---------------------------------------------------------------------------


def import_cupy(op: str, why: str):
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{op}: {why}; the CUDA backend needs CuPy ({install_hint('cuda13')})"
        ) from exc
    if cupy is None:  # blocked through sys.modules
        raise BackendUnavailableError(f"{op}: {why}; the CUDA backend needs CuPy, which is not importable")
    return cupy


def _bfloat16_bits(obj):
    """A torch or JAX bfloat16 array's bits as an int16 array of its own framework, or None for any other array."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.view(torch.int16) if obj.dtype == torch.bfloat16 else None
    if framework(obj) == "jax" and getattr(obj, "dtype", None) == BFLOAT16:
        jax = sys.modules["jax"]
        return jax.lax.bitcast_convert_type(obj, jax.numpy.int16)
    return None


def to_native(op: str, name: str, obj):
    """A NumPy or CuPy view of ``obj`` (no copy; strides kept); native arrays come back as they are."""
    if is_native(obj):
        return obj
    where, _ = location(op, name, obj)
    # DLPack's bfloat16 code is refused on import: share the bits as int16 and view them as bfloat16.
    bits = _bfloat16_bits(obj)
    shared = obj if bits is None else bits
    try:
        if where == "cpu":
            native = np.from_dlpack(shared)
        else:
            cupy = import_cupy(op, f"{name} is a GPU array ({describe(obj)})")
            if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
                native = cupy.from_dlpack(shared)
            else:
                native = cupy.asarray(obj)
        return native.view(BFLOAT16) if shared is not obj else native
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        hint = " (call .detach() first, or use dlgpu.torch for autograd)" if "grad" in str(exc) else ""
        raise DeviceError(f"{op}: {name} ({describe(obj)}) could not be shared without a copy: {exc}{hint}") from exc


def answer_in_kind(result, kind: str | None, originals: dict[int, Any]):
    """``result`` (an array, a tuple of them or None) converted to the caller's framework ``kind``."""
    if result is None:
        return None
    if isinstance(result, tuple):
        return tuple(answer_in_kind(r, kind, originals) for r in result)
    if id(result) in originals:  # an out= buffer of the caller's: return the caller's object
        return originals[id(result)]
    if kind == "torch":
        torch = sys.modules["torch"]
        if np.dtype(result.dtype) == BFLOAT16:  # DLPack exports no ml_dtypes dtype: the bits as int16
            return torch.from_dlpack(result.view(np.int16)).view(torch.bfloat16)
        return torch.from_dlpack(result)
    if kind == "jax":
        jax = sys.modules["jax"]
        if np.dtype(result.dtype) == BFLOAT16:  # as for torch: the bits as int16, bitcast back on JAX's side
            return jax.lax.bitcast_convert_type(jax.numpy.from_dlpack(result.view(np.int16)), jax.numpy.bfloat16)
        return jax.numpy.from_dlpack(result)
    if kind == "numba" and is_cupy(result):
        from numba import cuda

        return cuda.as_cuda_array(result)
    return result


# ---------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------


def stream_handle(op: str, stream) -> int:
    """The ``cudaStream_t`` of anything that names a stream."""
    if isinstance(stream, bool):
        raise ArgumentError(f"{op}: stream must be a CUDA stream, got {stream!r}")
    if isinstance(stream, (int, np.integer)):
        if stream < 0:
            raise ArgumentError(f"{op}: stream handle must be >= 0, got {stream!r}")
        return int(stream)
    if hasattr(stream, "__cuda_stream__"):
        value = stream.__cuda_stream__
        value = value() if callable(value) else value
        return int(value[1])  # (version, handle)
    for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attribute):
            return int(getattr(stream, attribute))
    raise ArgumentError(
        f"{op}: stream must be a CuPy stream, a torch.cuda.Stream, an object with __cuda_stream__ "
        f"or a cudaStream_t int, got {type(stream).__name__}"
    )


def cupy_stream(op: str, stream, cupy):
    """A CuPy stream object for ``stream`` (CuPy's own streams pass through)."""
    base = getattr(cupy.cuda, "BaseStream", None) or getattr(cupy.cuda.stream, "BaseStream", cupy.cuda.Stream)
    if isinstance(stream, (base, cupy.cuda.Stream, cupy.cuda.ExternalStream)):
        return stream
    return cupy.cuda.ExternalStream(stream_handle(op, stream))


def _torch_current_stream(device_id: int | None):
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch.cuda.current_stream(device_id)


# ---------------------------------------------------------------------------
# one call
# ---------------------------------------------------------------------------


def needs_interop(args, kwargs, stream) -> bool:
    """Whether a call needs more than a direct call on native arrays."""
    if stream is not None:
        return True
    for value in args:
        if is_foreign(value):
            return True
    for value in kwargs.values():
        if is_foreign(value):
            return True
    return False


def call(op: str, fn, signature: inspect.Signature, args, kwargs, stream):
    """Run ``fn`` (a validated op taking native arrays) on foreign arrays and/or a given stream.

    Decides CPU or GPU from where the arrays live before touching any of them,
    refuses host/device mixes and arrays on different GPUs, then wraps the
    foreign arrays and runs the op with the stream (and the arrays' device)
    current, and converts the results back.
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ArgumentError(f"{op}: {exc}") from exc
    arrays = {name: v for name, v in bound.arguments.items() if is_native(v) or is_foreign(v)}
    places = {name: location(op, name, v) for name, v in arrays.items()}
    kinds = {where for where, _ in places.values()}
    if len(kinds) > 1:
        listing = ", ".join(
            f"{name} ({describe(arrays[name])}) on {'GPU' if where == 'gpu' else 'the CPU'}"
            for name, (where, _) in places.items()
        )
        raise DeviceError(f"{op}: arrays must all be on the CPU or all on one GPU ({listing}); dlgpu never copies")
    devices = {dev for where, dev in places.values() if dev is not None}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on GPU {dev}" for name, (_, dev) in places.items() if dev is not None)
        raise DeviceError(f"{op}: arrays are on different GPUs ({listing})")
    foreign = {name: v for name, v in arrays.items() if is_foreign(v)}
    kinds_in = {framework(v) for v in foreign.values()}
    kind = kinds_in.pop() if len(kinds_in) == 1 else None
    on_gpu = kinds == {"gpu"}

    with contextlib.ExitStack() as scope:
        if on_gpu:
            first = next(iter(arrays))
            cupy = import_cupy(op, f"{first} ({describe(arrays[first])}) is on a GPU")
            device_id = devices.pop() if devices else None
            if device_id is not None:
                scope.enter_context(cupy.cuda.Device(device_id))
            if stream is None and kind == "torch":
                stream = _torch_current_stream(device_id)
            if stream is not None:
                scope.enter_context(cupy_stream(op, stream, cupy))
        elif stream is not None:
            raise ArgumentError(
                f"{op}: stream={stream!r} was given, but the arrays are on the CPU (NumPy backend); "
                "streams order GPU work only"
            )
        originals: dict[int, Any] = {}
        for name, value in foreign.items():
            native = to_native(op, name, value)
            bound.arguments[name] = native
            originals[id(native)] = value
        result = fn(*bound.args, **bound.kwargs)
        # Inside the stream scope: a GPU consumer's DLPack import orders itself after this stream.
        return answer_in_kind(result, kind, originals)
