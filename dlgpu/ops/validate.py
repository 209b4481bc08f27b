"""The checks every public op makes before any work.

Each ``dlgpu/ops/<stem>.py`` op validates its whole call with these, then
calls the backend that :func:`dlgpu.backend.select` returns with normalized
arguments.
Errors are subclasses of :class:`dlgpu.errors.DlgpuError` and name the op and
the offending value.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass

import numpy as np

from dlgpu import interop, memory_format
from dlgpu.backend import Backend, select
from dlgpu.device import array_module
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, LayoutError, ShapeError
from dlgpu.precision import is_floating, is_half
from dlgpu.window import output_size, span

ACTIVATIONS = (None, "relu")


# ---------------------------------------------------------------------------
# the public entry: foreign arrays and streams
# ---------------------------------------------------------------------------


def public(fn):
    """Make ``fn`` a public op: foreign arrays and ``stream=`` go through :mod:`dlgpu.interop`.

    Calls on NumPy/CuPy arrays with no stream go straight to ``fn``.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def op(*args, stream=None, **kwargs):
        if stream is None and not interop.needs_interop(args, kwargs, None):
            return fn(*args, **kwargs)
        return interop.call(fn.__name__, fn, signature, args, kwargs, stream)

    stream_parameter = inspect.Parameter("stream", inspect.Parameter.KEYWORD_ONLY, default=None)
    op.__signature__ = signature.replace(parameters=[*signature.parameters.values(), stream_parameter])
    return op


# ---------------------------------------------------------------------------
# array checks
# ---------------------------------------------------------------------------


def check_float(op: str, backend: Backend, **arrays) -> np.dtype:
    """All arrays share one floating dtype that the backend supports; return it."""
    dtypes = {name: np.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    for name, dtype in dtypes.items():
        if not is_floating(dtype):
            raise DtypeError(
                f"{op}: {name} has dtype {dtype.name}; a floating dtype is required "
                "(dlgpu does not cast: convert with .astype(np.float32))"
            )
        if not dtype.isnative:  # '>f4' on a little-endian host: the kernels read native words
            raise DtypeError(
                f"{op}: {name} has dtype {dtype.str}, not in the machine's byte order; "
                f"convert with .astype({dtype.name!r})"
            )
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name} is {d.name}" for name, d in dtypes.items())
        raise DtypeError(f"{op}: operands must share one dtype ({listing})")
    dtype = next(iter(dtypes.values()))
    supported = tuple(np.dtype(d) for d in backend.float_dtypes)
    if dtype not in supported:
        names = ", ".join(d.name for d in supported)
        raise DtypeError(f"{op}: dtype {dtype.name} is not supported by the {backend.name} backend ({names})")
    return dtype


def check_index_dtype(op: str, name: str, array, allowed: tuple, what: str) -> None:
    """An integer index array of one of the ``allowed`` dtypes, in the machine's byte order."""
    dtype = np.dtype(array.dtype)
    if dtype.kind in "iu" and not dtype.isnative:
        raise DtypeError(f"{op}: {name} has dtype {dtype.str}, not in the machine's byte order; "
                         f"convert with .astype({dtype.name!r})")
    if dtype not in tuple(np.dtype(a) for a in allowed):
        raise DtypeError(f"{op}: {name} must be {what}, got {dtype.name}")


def check_allocation(op: str, backend: Backend, **results) -> None:
    """Refuse results that could never fit in the backend's memory, before anything is allocated.

    ``results`` maps a name to (shape, dtype).  The sizes are Python ints, so an absurd
    padding or input_shape cannot overflow on the way to this check.
    """
    limit = backend.memory_bytes()
    if limit is None:
        return
    sizes = {name: math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
             for name, (shape, dtype) in results.items()}
    total = sum(sizes.values())
    if total > limit:
        listing = ", ".join(f"{name} {tuple(int(d) for d in results[name][0])}" for name in sizes)
        raise ShapeError(
            f"{op}: the result ({listing}) would take {_bytes(total)}, more than the {_bytes(limit)} of memory "
            f"the {backend.name} backend has; check the sizes and the padding"
        )


def _bytes(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_ndim(op: str, name: str, array, ndim: int, layout: str) -> None:
    if array.ndim != ndim:
        raise ShapeError(f"{op}: {name} must be {ndim}-D ({layout}), got shape {tuple(array.shape)}")


def check_nonempty(op: str, name: str, a, *, batch_ok: bool = False) -> None:
    """No dimension of ``a`` is 0, except the first (the batch) where ``batch_ok``, as PyTorch allows."""
    if 0 in tuple(a.shape[1:] if batch_ok else a.shape):
        rule = "only the batch (first) dimension may be 0" if batch_ok else "empty arrays are refused"
        raise ShapeError(f"{op}: {name} has an empty dimension (shape {tuple(a.shape)}); {rule}")


def zeros_result(like, shape, dtype, out=None):
    """The result of an op with nothing to compute (an empty batch, an empty sum): zeros of ``shape``
    in ``like``'s array module, or ``out`` zero-filled; no kernel of dlgpu's runs."""
    if out is not None:
        out.fill(0)
        return out
    return array_module(like).zeros(tuple(shape), dtype=dtype)


def is_contiguous(a) -> bool:
    """C-contiguous, and (for NumPy, which can say) aligned for its dtype."""
    flags = a.flags
    return bool(flags.c_contiguous) and bool(getattr(flags, "aligned", True))


def _stored_channels_last(a) -> bool:
    """A 4-D array stored channels_last (dlgpu.memory_format), and aligned like :func:`is_contiguous` asks."""
    view = memory_format.nhwc_view(a)
    return view is not None and is_contiguous(view)


def check_layout(op: str, *, empty_ok: bool = False, channels_last_ok: bool = False, **arrays) -> None:
    """Buffers the op writes: non-empty (unless ``empty_ok``) and C-contiguous (or, with ``channels_last_ok``,
    channels_last), or refused (a copy would lose the write)."""
    for name, a in arrays.items():
        if a is None:
            continue
        if not empty_ok:
            check_nonempty(op, name, a)
        if not is_contiguous(a) and not (channels_last_ok and _stored_channels_last(a)):
            raise LayoutError(
                f"{op}: {name} is not C-contiguous (shape {tuple(a.shape)}, strides {a.strides}); "
                "the op writes into it, so it must be a contiguous buffer "
                "(np.ascontiguousarray / cupy.ascontiguousarray, then copy back)"
            )


def contiguous(op: str, *, channels_last_ok: bool = False, **arrays) -> tuple:
    """Inputs the op only reads, each non-empty, as C-contiguous arrays (or, with ``channels_last_ok``,
    4-D ones as C-contiguous or channels_last arrays: dlgpu.memory_format).

    A strided view (transposed, sliced, reversed, broadcast) or an unaligned
    buffer is copied once into a fresh contiguous one (``copy(order="C")``,
    which NumPy and CuPy both provide; a channels_last one where those are
    kept); contiguous arrays pass as they are.
    """
    result = []
    for name, a in arrays.items():
        if a is not None:
            check_nonempty(op, name, a)
            if channels_last_ok and a.ndim == 4:
                if not is_contiguous(a) and not _stored_channels_last(a):
                    a = memory_format.as_nchw(a.transpose(memory_format.TO_NHWC).copy(order="C"))
            elif not is_contiguous(a):
                a = a.copy(order="C")
        result.append(a)
    return tuple(result)


def output_dtype(op: str, dtype: np.dtype, out_dtype) -> np.dtype:
    """The dtype of a product's or convolution's output: the inputs' (None), or float32 for 16-bit inputs."""
    if out_dtype is None:
        return dtype
    try:
        wanted = np.dtype(out_dtype)
    except TypeError as exc:
        raise DtypeError(f"{op}: out_dtype must be a dtype or None, got {out_dtype!r}") from exc
    if wanted != dtype and not (is_half(dtype) and wanted == np.dtype(np.float32)):
        raise DtypeError(
            f"{op}: out_dtype={wanted.name} for {dtype.name} inputs; the output is {dtype.name}, "
            "or float32 for float16/bfloat16 inputs (the float32 accumulation, unrounded)"
        )
    return wanted


def new_output(like, shape, dtype):
    """An empty array of ``like``'s kind (NumPy, or CuPy on like's device) for an op's output."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype)
    import cupy

    with like.device:
        return cupy.empty(shape, dtype)


def check_writeable(op: str, name: str, array) -> None:
    flags = array.flags
    if hasattr(flags, "writeable") and not flags.writeable:
        raise LayoutError(f"{op}: {name} is read-only, but the op writes into it")


def shares_memory(a, b) -> bool:
    """Whether the two arrays' memory ranges overlap (conservative, like np.may_share_memory)."""
    if isinstance(a, np.ndarray):
        return bool(np.may_share_memory(a, b))
    start_a, start_b = a.data.ptr, b.data.ptr
    return start_a < start_b + b.nbytes and start_b < start_a + a.nbytes


def _data_ptr(array) -> int:
    return array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr


def check_out(op: str, out, *, backend: Backend, shape, dtype, inputs: dict, in_place_ok=(),
              channels_last_ok: bool = False) -> None:
    """``out`` matches what the op produces, and writing it cannot corrupt an input.

    ``in_place_ok`` names inputs that ``out`` may be exactly (same buffer, same
    shape), as for elementwise ops where each element is read before it is written.
    ``channels_last_ok``: a channels_last ``out`` is taken as well as a C-contiguous one.
    """
    if out is None:
        return
    if select(op, out=out, **inputs) is not backend:
        raise DeviceError(f"{op}: out must be the same kind of array as the inputs")
    if tuple(out.shape) != tuple(shape):
        raise ShapeError(f"{op}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if np.dtype(out.dtype) != dtype:
        raise DtypeError(f"{op}: out has dtype {np.dtype(out.dtype).name}, expected {dtype.name}")
    # Its shape is the result's, checked above: empty only when that is.
    check_layout(op, out=out, empty_ok=True, channels_last_ok=channels_last_ok)
    check_writeable(op, "out", out)
    for name, array in inputs.items():
        if array is None or not shares_memory(out, array):
            continue
        same_buffer = _data_ptr(out) == _data_ptr(array) and out.shape == array.shape
        if not (name in in_place_ok and same_buffer):
            raise LayoutError(f"{op}: out overlaps input {name}; the op would read what it has already overwritten")


# ---------------------------------------------------------------------------
# hyper-parameter checks
# ---------------------------------------------------------------------------


def pair(op: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as an (h, w) tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ArgumentError(f"{op}: {name} must be an int or a pair (h, w), got {value!r}")
        pair_ = tuple(value)
    else:
        pair_ = (value, value)
    for v in pair_:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ArgumentError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ArgumentError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair_[0]), int(pair_[1])


def window_output_size(op: str, size: int, kernel: int, stride: int, padding: int, dilation: int, axis: str) -> int:
    """The window's output size along ``axis`` (:func:`dlgpu.window.output_size`), refusing one that does not fit."""
    if span(kernel, dilation) > size + 2 * padding:
        raise ArgumentError(
            f"{op}: the kernel spans {span(kernel, dilation)} along {axis} (size {kernel}, dilation {dilation}), "
            f"larger than the padded input ({size} + 2*{padding} = {size + 2 * padding})"
        )
    return output_size(size, kernel, stride, padding, dilation)


def check_activation(op: str, activation) -> None:
    if activation not in ACTIVATIONS:
        raise ArgumentError(f"{op}: activation must be None or 'relu', got {activation!r}")


def check_saved_output(op: str, activation, y, expected_shape) -> None:
    """For a fused ReLU, backward needs the forward output y for the mask."""
    if activation == "relu" and y is None:
        raise ArgumentError(f"{op}: activation='relu' needs y, the forward output, for the ReLU mask")
    if y is not None and tuple(y.shape) != tuple(expected_shape):
        raise ShapeError(f"{op}: y has shape {tuple(y.shape)}, expected {tuple(expected_shape)} (the shape of grad_y)")


def check_flag(op: str, name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{op}: {name} must be a bool, got {value!r}")


def check_scalar(op: str, name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{op}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{op}: {name} must be finite and >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------------------
# index checks: on the host, or by the kernels (dlgpu.device_errors)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexCheck:
    """Indices an op needs in [0, limit), and how a bad one is reported.

    The host checks them where the backend reads them back (:func:`check_index_range`);
    otherwise the kernels do, and report the first bad one in the device error
    flag under ``code``, a ``#define`` of kernels/<family>.cu, which
    dlgpu.cuda.error_flag turns back into this check's error.
    """

    op: str
    what: str  # the message after "<op>: ", with {value} (the bad index) and {limit}
    position: str  # what the position a kernel reports counts: "row", "argmax element"
    family: str
    code: str

    def error(self, value: int, limit: int, position: int | None = None) -> ArgumentError:
        """The error for ``value``; ``position`` for one a kernel reported, found after its call returned."""
        found = "" if position is None else (
            f" ({self.position} {position}; found by the kernel and reported at a later check: "
            "set DLGPU_DEBUG=1 to raise at the call)")
        return ArgumentError(f"{self.op}: {self.what.format(value=value, limit=limit)}{found}")


# Every IndexCheck the ops declare (index_check), for the device error flag's codes.
INDEX_CHECKS: list[IndexCheck] = []


def index_check(op: str, what: str, position: str, family: str, code: str) -> IndexCheck:
    """Declare an op's :class:`IndexCheck` (once, at the import of its dlgpu/ops/<stem>.py)."""
    check = IndexCheck(op, what, position, family, code)
    INDEX_CHECKS.append(check)
    return check


def check_index_range(check: IndexCheck, backend: Backend, indices, limit: int) -> None:
    """Every index in [0, limit), where the backend reads them back now (Backend.index_range); where it
    does not, the kernels check them (dlgpu.device_errors)."""
    bounds = backend.index_range(indices)
    if bounds is None:
        return
    low, high = bounds
    if low < 0 or high >= limit:
        raise check.error(low if low < 0 else high, limit)
