"""The public ops.  Each one validates every argument, then runs on the backend its arrays choose.

NumPy arrays run on the CPU backend (``dlgpu.cpu``), CuPy arrays on the CUDA
backend (``dlgpu.cuda``).  Arrays of other frameworks are wrapped without a
copy first (:mod:`dlgpu.interop`: DLPack or ``__cuda_array_interface__``, so
PyTorch, JAX and Numba arrays work) and results come back in the caller's
framework.  Arrays on the host and on a GPU in one call are an error, never a
copy.  Nothing is broadcast, truncated or cast: operands share one floating
dtype and no dimension is empty.  Every check happens before any work, so a
refused call leaves nothing half-done.

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

import functools
import inspect
import math
import numbers
import sys
from types import ModuleType

import numpy as np

from dlgpu import interop
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, LayoutError, ShapeError
from dlgpu.precision import resolve_precision

__all__ = [
    "matmul",
    "matmul_backward",
    "linear",
    "linear_backward",
    "conv2d",
    "conv2d_backward",
    "relu",
    "relu_backward",
    "tanh",
    "tanh_backward",
    "sigmoid",
    "sigmoid_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "sgd_step",
]

ACTIVATIONS = (None, "relu")


# ---------------------------------------------------------------------------
# backend choice and array checks
# ---------------------------------------------------------------------------


def _array_kind(op: str, name: str, array) -> str:
    """'numpy' or 'cupy'; anything else is refused with a hint."""
    if isinstance(array, np.ndarray):
        return "numpy"
    module = type(array).__module__.split(".")[0]
    if module == "cupy" and hasattr(array, "device"):
        return "cupy"
    if interop.is_foreign(array):  # public ops wrap these first (dlgpu.interop); internal callers must too
        raise DeviceError(
            f"{op}: {name} is a {type(array).__module__}.{type(array).__name__}; "
            "wrap it with dlgpu.interop.to_native (cupy.from_dlpack / np.from_dlpack, no copy)"
        )
    raise DtypeError(
        f"{op}: {name} must be a NumPy or CuPy array (or one with DLPack or "
        f"__cuda_array_interface__), got {type(array).__name__}"
    )


def _backend(op: str, **arrays) -> ModuleType:
    """The backend module that the (non-None) arrays select; all must agree."""
    kinds = {name: _array_kind(op, name, a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{name} is {kind}" for name, kind in kinds.items())
        raise DeviceError(f"{op}: arrays must all be NumPy or all CuPy ({listing}); dlgpu never copies between them")
    if "cupy" in kinds.values():
        devices = {name: arrays[name].device.id for name in kinds}
        if len(set(devices.values())) > 1:
            listing = ", ".join(f"{name} on GPU {dev}" for name, dev in devices.items())
            raise DeviceError(f"{op}: arrays are on different GPUs ({listing})")
        import dlgpu.cuda as backend
    else:
        import dlgpu.cpu as backend
    return backend


def _check_float(op: str, backend: ModuleType, **arrays) -> np.dtype:
    """All arrays share one floating dtype that the backend supports; return it."""
    dtypes = {name: np.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    for name, dtype in dtypes.items():
        if dtype.kind != "f":
            raise DtypeError(
                f"{op}: {name} has dtype {dtype.name}; a floating dtype is required "
                "(dlgpu does not cast: convert with .astype(np.float32))"
            )
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name} is {d.name}" for name, d in dtypes.items())
        raise DtypeError(f"{op}: operands must share one dtype ({listing})")
    dtype = next(iter(dtypes.values()))
    supported = tuple(np.dtype(d) for d in backend.FLOAT_DTYPES)
    if dtype not in supported:
        names = ", ".join(d.name for d in supported)
        raise DtypeError(f"{op}: dtype {dtype.name} is not supported by the {backend.__name__} backend ({names})")
    return dtype


def _check_ndim(op: str, name: str, array, ndim: int, layout: str) -> None:
    if array.ndim != ndim:
        raise ShapeError(f"{op}: {name} must be {ndim}-D ({layout}), got shape {tuple(array.shape)}")


def _check_nonempty(op: str, name: str, a) -> None:
    if 0 in a.shape:
        raise ShapeError(f"{op}: {name} has an empty dimension (shape {tuple(a.shape)}); empty arrays are refused")


def _is_contiguous(a) -> bool:
    """C-contiguous, and (for NumPy, which can say) aligned for its dtype."""
    flags = a.flags
    return bool(flags.c_contiguous) and bool(getattr(flags, "aligned", True))


def _check_layout(op: str, **arrays) -> None:
    """Buffers the op writes: non-empty and C-contiguous, or refused (a copy would lose the write)."""
    for name, a in arrays.items():
        if a is None:
            continue
        _check_nonempty(op, name, a)
        if not _is_contiguous(a):
            raise LayoutError(
                f"{op}: {name} is not C-contiguous (shape {tuple(a.shape)}, strides {a.strides}); "
                "the op writes into it, so it must be a contiguous buffer "
                "(np.ascontiguousarray / cupy.ascontiguousarray, then copy back)"
            )


def _contiguous(op: str, **arrays) -> tuple:
    """Inputs the op only reads, each non-empty, as C-contiguous arrays.

    A strided view (transposed, sliced, reversed, broadcast) or an unaligned
    buffer is copied once into a fresh contiguous one (``copy(order="C")``,
    which NumPy and CuPy both provide); contiguous arrays pass as they are.
    """
    result = []
    for name, a in arrays.items():
        if a is not None:
            _check_nonempty(op, name, a)
            if not _is_contiguous(a):
                a = a.copy(order="C")
        result.append(a)
    return tuple(result)


def _public(fn):
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


def _check_writeable(op: str, name: str, array) -> None:
    flags = array.flags
    if hasattr(flags, "writeable") and not flags.writeable:
        raise LayoutError(f"{op}: {name} is read-only, but the op writes into it")


def _shares_memory(a, b) -> bool:
    """Whether the two arrays' memory ranges overlap (conservative, like np.may_share_memory)."""
    if isinstance(a, np.ndarray):
        return bool(np.may_share_memory(a, b))
    start_a, start_b = a.data.ptr, b.data.ptr
    return start_a < start_b + b.nbytes and start_b < start_a + a.nbytes


def _check_out(op: str, out, *, backend: ModuleType, shape, dtype, inputs: dict, in_place_ok=()) -> None:
    """``out`` matches what the op produces, and writing it cannot corrupt an input.

    ``in_place_ok`` names inputs that ``out`` may be exactly (same buffer, same
    shape), as for elementwise ops where each element is read before it is written.
    """
    if out is None:
        return
    if _backend(op, out=out, **inputs) is not backend:
        raise DeviceError(f"{op}: out must be the same kind of array as the inputs")
    if tuple(out.shape) != tuple(shape):
        raise ShapeError(f"{op}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if np.dtype(out.dtype) != dtype:
        raise DtypeError(f"{op}: out has dtype {np.dtype(out.dtype).name}, expected {dtype.name}")
    _check_layout(op, out=out)
    _check_writeable(op, "out", out)
    for name, array in inputs.items():
        if array is None or not _shares_memory(out, array):
            continue
        same_buffer = _data_ptr(out) == _data_ptr(array) and out.shape == array.shape
        if not (name in in_place_ok and same_buffer):
            raise LayoutError(f"{op}: out overlaps input {name}; the op would read what it has already overwritten")


def _data_ptr(array) -> int:
    return array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr


# ---------------------------------------------------------------------------
# hyper-parameter checks
# ---------------------------------------------------------------------------


def _pair(op: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as an (h, w) tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ArgumentError(f"{op}: {name} must be an int or a pair (h, w), got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ArgumentError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ArgumentError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_activation(op: str, activation) -> None:
    if activation not in ACTIVATIONS:
        raise ArgumentError(f"{op}: activation must be None or 'relu', got {activation!r}")


def _check_flag(op: str, name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{op}: {name} must be a bool, got {value!r}")


def _check_scalar(op: str, name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{op}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum:
        raise ArgumentError(f"{op}: {name} must be finite and >= {minimum}, got {value!r}")
    return value


def _conv_output_size(op: str, size: int, kernel: int, stride: int, padding: int, dilation: int, axis: str) -> int:
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        raise ArgumentError(
            f"{op}: the kernel spans {span} along {axis} (size {kernel}, dilation {dilation}), "
            f"larger than the padded input ({size} + 2*{padding} = {size + 2 * padding})"
        )
    return (size + 2 * padding - span) // stride + 1


# ---------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------


def _matmul_dims(op: str, a, b, transpose_a: bool, transpose_b: bool) -> tuple[int, int, int]:
    _check_ndim(op, "a", a, 2, "a matrix")
    _check_ndim(op, "b", b, 2, "a matrix")
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    k_b, n = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if k != k_b:
        raise ShapeError(
            f"{op}: inner dimensions differ: op(a) is {m}x{k}, op(b) is {k_b}x{n} "
            f"(transpose_a={transpose_a}, transpose_b={transpose_b})"
        )
    return m, n, k


def _matrix_operand(op: str, name: str, array, transpose: bool):
    """A C-contiguous operand and its flag: a transposed view flips the flag (no copy); others copy once."""
    _check_nonempty(op, name, array)
    if not _is_contiguous(array) and array.flags.f_contiguous and getattr(array.flags, "aligned", True):
        return array.T, not transpose
    return _contiguous(op, **{name: array})[0], transpose


@_public
def matmul(a, b, *, transpose_a=False, transpose_b=False, precision=None, out=None):
    """C = op(a) @ op(b), op(x) = x.T where the flag says so.  2-D arrays; returns (M, N).

    Layout: a transposed view (``x.T`` of a contiguous matrix) is used as it
    is, with its transpose flag flipped; any other strided operand is copied
    once.  ``out`` must be C-contiguous.
    """
    op = "matmul"
    backend = _backend(op, a=a, b=b)
    dtype = _check_float(op, backend, a=a, b=b)
    _check_flag(op, "transpose_a", transpose_a)
    _check_flag(op, "transpose_b", transpose_b)
    m, n, _ = _matmul_dims(op, a, b, transpose_a, transpose_b)
    a, transpose_a = _matrix_operand(op, "a", a, bool(transpose_a))
    b, transpose_b = _matrix_operand(op, "b", b, bool(transpose_b))
    precision = resolve_precision(precision, op=op)
    _check_out(op, out, backend=backend, shape=(m, n), dtype=dtype, inputs={"a": a, "b": b})
    return backend.matmul(a, b, transpose_a, transpose_b, precision, out)


@_public
def matmul_backward(grad_c, a, b, *, transpose_a=False, transpose_b=False, precision=None):
    """Gradients of C = op(a) @ op(b): returns (grad_a, grad_b) shaped like a and b.

    Layout: strided inputs are copied once; the gradients are C-contiguous.
    """
    op = "matmul_backward"
    backend = _backend(op, grad_c=grad_c, a=a, b=b)
    _check_float(op, backend, grad_c=grad_c, a=a, b=b)
    _check_flag(op, "transpose_a", transpose_a)
    _check_flag(op, "transpose_b", transpose_b)
    m, n, _ = _matmul_dims(op, a, b, transpose_a, transpose_b)
    _check_ndim(op, "grad_c", grad_c, 2, "a matrix")
    if tuple(grad_c.shape) != (m, n):
        raise ShapeError(f"{op}: grad_c has shape {tuple(grad_c.shape)}, expected {(m, n)}")
    grad_c, a, b = _contiguous(op, grad_c=grad_c, a=a, b=b)
    precision = resolve_precision(precision, op=op)
    return backend.matmul_backward(grad_c, a, b, bool(transpose_a), bool(transpose_b), precision)


def _linear_shapes(op: str, x, weight, bias) -> tuple[int, int]:
    _check_ndim(op, "x", x, 2, "(batch, in_features)")
    _check_ndim(op, "weight", weight, 2, "(out_features, in_features)")
    batch, in_features = x.shape
    out_features, w_in = weight.shape
    if w_in != in_features:
        raise ShapeError(
            f"{op}: x has {in_features} features but weight {tuple(weight.shape)} expects {w_in} "
            "(weight is (out_features, in_features))"
        )
    if bias is not None:
        _check_ndim(op, "bias", bias, 1, "(out_features,)")
        if bias.shape[0] != out_features:
            raise ShapeError(f"{op}: bias has {bias.shape[0]} elements, weight has {out_features} output features")
    return batch, out_features


@_public
def linear(x, weight, bias=None, *, activation=None, precision=None, out=None):
    """y = act(x @ weight.T + bias); x (B, in), weight (out, in), bias (out,) or None.

    Layout: strided inputs are copied once; ``out`` must be C-contiguous.
    """
    op = "linear"
    backend = _backend(op, x=x, weight=weight, bias=bias)
    dtype = _check_float(op, backend, x=x, weight=weight, bias=bias)
    shape = _linear_shapes(op, x, weight, bias)
    _check_activation(op, activation)
    x, weight, bias = _contiguous(op, x=x, weight=weight, bias=bias)
    precision = resolve_precision(precision, op=op)
    _check_out(op, out, backend=backend, shape=shape, dtype=dtype, inputs={"x": x, "weight": weight, "bias": bias})
    return backend.linear(x, weight, bias, activation, precision, out)


def _check_saved_output(op: str, activation, y, expected_shape) -> None:
    """For a fused ReLU, backward needs the forward output y for the mask."""
    if activation == "relu" and y is None:
        raise ArgumentError(f"{op}: activation='relu' needs y, the forward output, for the ReLU mask")
    if y is not None and tuple(y.shape) != tuple(expected_shape):
        raise ShapeError(f"{op}: y has shape {tuple(y.shape)}, expected {tuple(expected_shape)} (the shape of grad_y)")


@_public
def linear_backward(grad_y, x, weight, *, y=None, activation=None, precision=None):
    """Gradients of linear: returns (grad_x, grad_w, grad_b).

    With ``activation="relu"``, ``y`` (the forward output) masks grad_y.
    grad_b is always returned (the sum of the masked grad_y over the batch).
    Layout: strided inputs are copied once.
    """
    op = "linear_backward"
    backend = _backend(op, grad_y=grad_y, x=x, weight=weight, y=y)
    _check_float(op, backend, grad_y=grad_y, x=x, weight=weight, y=y)
    shape = _linear_shapes(op, x, weight, None)
    _check_ndim(op, "grad_y", grad_y, 2, "(batch, out_features)")
    if tuple(grad_y.shape) != shape:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {shape}")
    _check_activation(op, activation)
    _check_saved_output(op, activation, y, shape)
    grad_y, x, weight, y = _contiguous(op, grad_y=grad_y, x=x, weight=weight, y=y)
    precision = resolve_precision(precision, op=op)
    return backend.linear_backward(grad_y, x, weight, y, activation, precision)


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------


def _conv_geometry(op: str, x, weight, bias, stride, padding, dilation):
    """Normalized (stride, padding, dilation) pairs and the output shape (N, K, P, Q)."""
    _check_ndim(op, "x", x, 4, "NCHW")
    _check_ndim(op, "weight", weight, 4, "OIHW")
    n, c, h, w = x.shape
    k, c_w, r, s = weight.shape
    if c_w != c:
        raise ShapeError(f"{op}: x has {c} channels but weight {tuple(weight.shape)} expects {c_w} (OIHW)")
    if bias is not None:
        _check_ndim(op, "bias", bias, 1, "(out_channels,)")
        if bias.shape[0] != k:
            raise ShapeError(f"{op}: bias has {bias.shape[0]} elements, weight has {k} output channels")
    stride = _pair(op, "stride", stride, minimum=1)
    padding = _pair(op, "padding", padding, minimum=0)
    dilation = _pair(op, "dilation", dilation, minimum=1)
    p = _conv_output_size(op, h, r, stride[0], padding[0], dilation[0], "height")
    q = _conv_output_size(op, w, s, stride[1], padding[1], dilation[1], "width")
    return stride, padding, dilation, (n, k, p, q)


@_public
def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, activation=None, precision=None, out=None):
    """y = act(conv(x, weight) + bias): x (N, C, H, W), weight (K, C, R, S), bias (K,) or None.

    Cross-correlation, as in PyTorch.  Returns (N, K, P, Q) with
    P = (H + 2*pad_h - dil_h*(R-1) - 1) // stride_h + 1, likewise Q.
    Layout: strided inputs (a channels-last view, a slice) are copied once;
    ``out`` must be C-contiguous.
    """
    op = "conv2d"
    backend = _backend(op, x=x, weight=weight, bias=bias)
    dtype = _check_float(op, backend, x=x, weight=weight, bias=bias)
    stride, padding, dilation, shape = _conv_geometry(op, x, weight, bias, stride, padding, dilation)
    _check_activation(op, activation)
    x, weight, bias = _contiguous(op, x=x, weight=weight, bias=bias)
    precision = resolve_precision(precision, op=op)
    _check_out(op, out, backend=backend, shape=shape, dtype=dtype, inputs={"x": x, "weight": weight, "bias": bias})
    return backend.conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out)


@_public
def conv2d_backward(grad_y, x, weight, *, y=None, stride=1, padding=0, dilation=1, activation=None, precision=None):
    """Gradients of conv2d: returns (grad_x, grad_w, grad_b); ``y`` supplies the ReLU mask.

    Layout: strided inputs are copied once.
    """
    op = "conv2d_backward"
    backend = _backend(op, grad_y=grad_y, x=x, weight=weight, y=y)
    _check_float(op, backend, grad_y=grad_y, x=x, weight=weight, y=y)
    stride, padding, dilation, shape = _conv_geometry(op, x, weight, None, stride, padding, dilation)
    _check_ndim(op, "grad_y", grad_y, 4, "NKPQ")
    if tuple(grad_y.shape) != shape:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {shape}")
    _check_activation(op, activation)
    _check_saved_output(op, activation, y, shape)
    grad_y, x, weight, y = _contiguous(op, grad_y=grad_y, x=x, weight=weight, y=y)
    precision = resolve_precision(precision, op=op)
    return backend.conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision)


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------


def _unary(name: str, x, out):
    backend = _backend(name, x=x)
    dtype = _check_float(name, backend, x=x)
    (contiguous,) = _contiguous(name, x=x)
    if contiguous is not x and out is None:
        out = contiguous  # the copy is ours: compute in place in it
    x = contiguous
    _check_out(name, out, backend=backend, shape=x.shape, dtype=dtype, inputs={"x": x}, in_place_ok=("x",))
    return getattr(backend, name)(x, out)


def _unary_backward(name: str, grad_y, y, out):
    backend = _backend(name, grad_y=grad_y, y=y)
    dtype = _check_float(name, backend, grad_y=grad_y, y=y)
    if tuple(grad_y.shape) != tuple(y.shape):
        raise ShapeError(f"{name}: grad_y has shape {tuple(grad_y.shape)} but y has {tuple(y.shape)}")
    contiguous, y = _contiguous(name, grad_y=grad_y, y=y)
    if contiguous is not grad_y and out is None:
        out = contiguous  # the copy is ours: compute in place in it
    grad_y = contiguous
    _check_out(
        name, out, backend=backend, shape=y.shape, dtype=dtype, inputs={"grad_y": grad_y, "y": y},
        in_place_ok=("grad_y", "y"),
    )
    return getattr(backend, name)(grad_y, y, out)


@_public
def relu(x, *, out=None):
    """max(x, 0), elementwise; ``out=x`` works in place.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary("relu", x, out)


@_public
def tanh(x, *, out=None):
    """tanh(x), elementwise; ``out=x`` works in place.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary("tanh", x, out)


@_public
def sigmoid(x, *, out=None):
    """1 / (1 + exp(-x)), elementwise; ``out=x`` works in place.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary("sigmoid", x, out)


@_public
def relu_backward(grad_y, y, *, out=None):
    """grad_y * (y > 0), from the forward output y.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary_backward("relu_backward", grad_y, y, out)


@_public
def tanh_backward(grad_y, y, *, out=None):
    """grad_y * (1 - y**2), from the forward output y.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary_backward("tanh_backward", grad_y, y, out)


@_public
def sigmoid_backward(grad_y, y, *, out=None):
    """grad_y * y * (1 - y), from the forward output y.

    Layout: a strided input is copied once (the result is computed in that copy);
    ``out`` must be C-contiguous.
    """
    return _unary_backward("sigmoid_backward", grad_y, y, out)


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------


def _pool_geometry(op: str, x, kernel_size, stride, padding):
    """Normalized (kernel, stride, padding) pairs and the output shape (N, C, P, Q) of max pooling."""
    _check_ndim(op, "x", x, 4, "NCHW")
    kernel = _pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else _pair(op, "stride", stride, minimum=1)
    padding = _pair(op, "padding", padding, minimum=0)
    for axis, k, p in (("height", kernel[0], padding[0]), ("width", kernel[1], padding[1])):
        if p > k // 2:
            raise ArgumentError(f"{op}: padding {p} along {axis} exceeds half the kernel size {k}")
    p = _conv_output_size(op, x.shape[2], kernel[0], stride[0], padding[0], 1, "height")
    q = _conv_output_size(op, x.shape[3], kernel[1], stride[1], padding[1], 1, "width")
    return kernel, stride, padding, (x.shape[0], x.shape[1], p, q)


@_public
def max_pool2d(x, kernel_size, *, stride=None, padding=0):
    """Max over (kh, kw) windows of an NCHW array: returns (y, argmax).

    stride defaults to kernel_size; padding (at most half the kernel, as in
    PyTorch) never wins.  argmax (int32) is h * W + w in the unpadded input
    plane; ties go to the first element of the window in row-major order, and
    a NaN in the window is propagated.  Layout: a strided x is copied once.
    """
    op = "max_pool2d"
    backend = _backend(op, x=x)
    _check_float(op, backend, x=x)
    kernel, stride, padding, _ = _pool_geometry(op, x, kernel_size, stride, padding)
    (x,) = _contiguous(op, x=x)
    return backend.max_pool2d(x, kernel, stride, padding)


@_public
def max_pool2d_backward(grad_y, argmax, input_shape):
    """Route grad_y to the argmax positions of an input of ``input_shape``; overlaps add.

    Layout: strided inputs are copied once.
    """
    op = "max_pool2d_backward"
    backend = _backend(op, grad_y=grad_y, argmax=argmax)
    _check_float(op, backend, grad_y=grad_y)
    _check_ndim(op, "grad_y", grad_y, 4, "NCPQ")
    if np.dtype(argmax.dtype) != np.int32:
        raise DtypeError(f"{op}: argmax must be int32 (as max_pool2d returns it), got {np.dtype(argmax.dtype).name}")
    if tuple(argmax.shape) != tuple(grad_y.shape):
        raise ShapeError(f"{op}: argmax has shape {tuple(argmax.shape)} but grad_y has {tuple(grad_y.shape)}")
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 4
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    ):
        raise ArgumentError(f"{op}: input_shape must be 4 positive ints (N, C, H, W), got {input_shape!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if input_shape[:2] != tuple(grad_y.shape[:2]):
        raise ShapeError(f"{op}: input_shape {input_shape} and grad_y {tuple(grad_y.shape)} differ in N or C")
    grad_y, argmax = _contiguous(op, grad_y=grad_y, argmax=argmax)
    plane = input_shape[2] * input_shape[3]
    low, high = _value_range(argmax)
    if low < 0 or high >= plane:
        raise ArgumentError(f"{op}: argmax holds {low if low < 0 else high}, outside the input plane [0, {plane})")
    return backend.max_pool2d_backward(grad_y, argmax, input_shape)


# ---------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------


def _value_range(indices) -> tuple[int, int]:
    """(min, max) of an index array, for range checks before a launch.

    Reading a CuPy array's values back is forbidden while its stream is being
    captured into a CUDA graph; then the check is skipped, returning (0, 0).
    That is safe because the kernels taking indices guard them on the device
    (softmax writes NaN for a bad label, pooling's backward never matches a bad
    argmax), and a captured step replays buffers its eager warm-up checked.
    """
    cupy = sys.modules.get("cupy")  # a CuPy array means CuPy is imported already
    if cupy is not None and not isinstance(indices, np.ndarray) and cupy.cuda.get_current_stream().is_capturing():
        return 0, 0
    return int(indices.min()), int(indices.max())


def _check_labels(op: str, labels, rows: int, classes: int) -> None:
    dtype = np.dtype(labels.dtype)
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise DtypeError(f"{op}: labels must be int32 or int64 class indices, got {dtype.name}")
    _check_ndim(op, "labels", labels, 1, "(N,)")
    if labels.shape[0] != rows:
        raise ShapeError(f"{op}: labels has {labels.shape[0]} entries for {rows} rows")
    low, high = _value_range(labels)
    if low < 0 or high >= classes:
        raise ArgumentError(f"{op}: label {low if low < 0 else high} is outside [0, {classes})")


@_public
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels: returns (loss, probs).

    logits (N, C); labels (N,) int32/int64 in [0, C).  loss is a 0-d array of
    the logits' dtype; probs is softmax(logits).  Stable for logits of any size.
    Layout: strided inputs are copied once.
    """
    op = "softmax_cross_entropy"
    backend = _backend(op, logits=logits, labels=labels)
    _check_float(op, backend, logits=logits)
    _check_ndim(op, "logits", logits, 2, "(N, classes)")
    logits, labels = _contiguous(op, logits=logits, labels=labels)
    _check_labels(op, labels, *logits.shape)
    return backend.softmax_cross_entropy(logits, labels)


@_public
def softmax_cross_entropy_backward(probs, labels):
    """Gradient of the mean loss with respect to the logits: (probs - onehot(labels)) / N.

    Layout: strided inputs are copied once.
    """
    op = "softmax_cross_entropy_backward"
    backend = _backend(op, probs=probs, labels=labels)
    _check_float(op, backend, probs=probs)
    _check_ndim(op, "probs", probs, 2, "(N, classes)")
    probs, labels = _contiguous(op, probs=probs, labels=labels)
    _check_labels(op, labels, *probs.shape)
    return backend.softmax_cross_entropy_backward(probs, labels)


# ---------------------------------------------------------------------------
# optimizer
# ---------------------------------------------------------------------------


@_public
def sgd_step(param, grad, velocity, *, lr, momentum=0.0, weight_decay=0.0):
    """One SGD step in place, PyTorch's rule (no dampening, no Nesterov).

    g = grad + weight_decay * param; with momentum, velocity = momentum * velocity + g
    and g = velocity; then param -= lr * g.  velocity may be None when momentum is 0.
    Layout: param and velocity are updated in place, so they must be
    C-contiguous (LayoutError otherwise); a strided grad is copied once.
    """
    op = "sgd_step"
    lr = _check_scalar(op, "lr", lr)
    momentum = _check_scalar(op, "momentum", momentum)
    weight_decay = _check_scalar(op, "weight_decay", weight_decay)
    if momentum != 0.0 and velocity is None:
        raise ArgumentError(f"{op}: momentum={momentum} needs a velocity buffer (zeros like param to start)")
    backend = _backend(op, param=param, grad=grad, velocity=velocity)
    _check_float(op, backend, param=param, grad=grad, velocity=velocity)
    for name, array in (("grad", grad), ("velocity", velocity)):
        if array is not None and tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"{op}: {name} has shape {tuple(array.shape)}, param has {tuple(param.shape)}")
    _check_layout(op, param=param, velocity=velocity)  # updated in place: a copy would drop the update
    (grad,) = _contiguous(op, grad=grad)
    _check_writeable(op, "param", param)
    if velocity is not None:
        _check_writeable(op, "velocity", velocity)
    for name_a, a, name_b, b in (
        ("param", param, "grad", grad),
        ("param", param, "velocity", velocity),
        ("velocity", velocity, "grad", grad),
    ):
        if a is not None and b is not None and _shares_memory(a, b):
            raise LayoutError(f"{op}: {name_a} overlaps {name_b}; each needs its own buffer")
    backend.sgd_step(param, grad, velocity, lr, momentum, weight_decay)
