"""The public matrix products: matmul and linear, forward and backward.

Each op validates its whole call, then calls the backend its arrays select
(kernels/gemm*.cu through dlgpu.cuda.gemm,
or numba's tiled product through dlgpu.cpu.gemm).

Empty operands are allowed as in PyTorch and launch nothing: a product with
M or N = 0 is empty, one with K = 0 is zeros (an empty sum); ``linear`` takes
any leading dimensions, of which any may be 0.
"""

from __future__ import annotations

import numpy as np

from dlgpu.backend import select
from dlgpu.ops.validate import (
    check_activation,
    check_allocation,
    check_flag,
    check_float,
    check_ndim,
    check_nonempty,
    check_out,
    check_saved_output,
    contiguous,
    is_contiguous,
    new_output,
    output_dtype,
    public,
    zeros_result,
)
from dlgpu.errors import ShapeError
from dlgpu.precision import resolve_precision

__all__ = ["matmul", "matmul_backward", "linear", "linear_backward"]


def matmul_dims(op: str, a, b, transpose_a: bool, transpose_b: bool) -> tuple[int, int, int]:
    check_ndim(op, "a", a, 2, "a matrix")
    check_ndim(op, "b", b, 2, "a matrix")
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
    check_nonempty(op, name, array)
    if not is_contiguous(array) and array.flags.f_contiguous and getattr(array.flags, "aligned", True):
        return array.T, not transpose
    return contiguous(op, **{name: array})[0], transpose


@public
def matmul(a, b, *, transpose_a=False, transpose_b=False, precision=None, out=None, out_dtype=None):
    """C = op(a) @ op(b), op(x) = x.T where the flag says so.  2-D arrays; returns (M, N).

    Layout: a transposed view (``x.T`` of a contiguous matrix) is used as it
    is, with its transpose flag flipped; any other strided operand is copied
    once.  ``out`` must be C-contiguous.

    16-bit storage: float16 / bfloat16 operands are read as stored and
    accumulated in float32 (``precision`` None, or the storage's own "fp16" /
    "bf16"); C is rounded once to their dtype, or left float32 with
    ``out_dtype=np.float32``.  The same holds for every product here.
    """
    op = "matmul"
    backend = select(op, a=a, b=b)
    dtype = check_float(op, backend, a=a, b=b)
    check_flag(op, "transpose_a", transpose_a)
    check_flag(op, "transpose_b", transpose_b)
    m, n, k = matmul_dims(op, a, b, transpose_a, transpose_b)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    result = output_dtype(op, dtype, out_dtype)
    check_allocation(op, backend, c=((m, n), result))
    if 0 in (m, n, k):
        check_out(op, out, backend=backend, shape=(m, n), dtype=result, inputs={"a": a, "b": b})
        return zeros_result(a, (m, n), result, out)
    a, transpose_a = _matrix_operand(op, "a", a, bool(transpose_a))
    b, transpose_b = _matrix_operand(op, "b", b, bool(transpose_b))
    check_out(op, out, backend=backend, shape=(m, n), dtype=result, inputs={"a": a, "b": b})
    if out is None and result != dtype:
        out = new_output(a, (m, n), result)
    return backend.matmul(a, b, transpose_a, transpose_b, precision, out)


@public
def matmul_backward(grad_c, a, b, *, transpose_a=False, transpose_b=False, precision=None):
    """Gradients of C = op(a) @ op(b): returns (grad_a, grad_b) shaped like a and b.

    Layout: strided inputs are copied once; the gradients are C-contiguous.
    """
    op = "matmul_backward"
    backend = select(op, grad_c=grad_c, a=a, b=b)
    dtype = check_float(op, backend, grad_c=grad_c, a=a, b=b)
    check_flag(op, "transpose_a", transpose_a)
    check_flag(op, "transpose_b", transpose_b)
    m, n, k = matmul_dims(op, a, b, transpose_a, transpose_b)
    check_ndim(op, "grad_c", grad_c, 2, "a matrix")
    if tuple(grad_c.shape) != (m, n):
        raise ShapeError(f"{op}: grad_c has shape {tuple(grad_c.shape)}, expected {(m, n)}")
    precision = resolve_precision(precision, op=op, dtype=dtype)
    if 0 in (m, n, k):  # every gradient entry is an empty sum, or there is none
        return zeros_result(a, a.shape, dtype), zeros_result(a, b.shape, dtype)
    grad_c, a, b = contiguous(op, grad_c=grad_c, a=a, b=b)
    return backend.matmul_backward(grad_c, a, b, bool(transpose_a), bool(transpose_b), precision)


def linear_shapes(op: str, x, weight, bias) -> tuple[int, ...]:
    """The shape of linear's result, (*x.shape[:-1], out_features), after the shapes are checked."""
    if x.ndim < 1:
        raise ShapeError(f"{op}: x must have at least 1 dimension (*, in_features), got shape {tuple(x.shape)}")
    check_ndim(op, "weight", weight, 2, "(out_features, in_features)")
    in_features = x.shape[-1]
    out_features, w_in = weight.shape
    if w_in != in_features:
        raise ShapeError(
            f"{op}: x has {in_features} features but weight {tuple(weight.shape)} expects {w_in} "
            "(weight is (out_features, in_features))"
        )
    if bias is not None:
        check_ndim(op, "bias", bias, 1, "(out_features,)")
        if bias.shape[0] != out_features:
            raise ShapeError(f"{op}: bias has {bias.shape[0]} elements, weight has {out_features} output features")
    if in_features == 0 or out_features == 0:
        raise ShapeError(f"{op}: x {tuple(x.shape)} and weight {tuple(weight.shape)} have no features; "
                         "only the leading (batch) dimensions of x may be 0")
    return (*x.shape[:-1], out_features)


def _rows(array, features: int):
    """An (*, features) array as a (rows, features) matrix: a view of a contiguous array."""
    return array.reshape(-1, features)


@public
def linear(x, weight, bias=None, *, activation=None, precision=None, out=None, out_dtype=None):
    """y = act(x @ weight.T + bias); x (*, in), weight (out, in), bias (out,) or None; y (*, out).

    As ``torch.nn.functional.linear``, x may have any leading dimensions (or
    none); they are flattened into one batch (a view) and restored on the
    result.  An empty batch gives an empty result.
    Layout: strided inputs are copied once; ``out`` must be C-contiguous.
    16-bit storage and ``out_dtype`` as for :func:`matmul`.
    """
    op = "linear"
    backend = select(op, x=x, weight=weight, bias=bias)
    dtype = check_float(op, backend, x=x, weight=weight, bias=bias)
    shape = linear_shapes(op, x, weight, bias)
    check_activation(op, activation)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    result = output_dtype(op, dtype, out_dtype)
    check_allocation(op, backend, y=(shape, result))
    if 0 in shape:
        check_out(op, out, backend=backend, shape=shape, dtype=result, inputs={"x": x, "weight": weight, "bias": bias})
        return zeros_result(x, shape, result, out)
    x, weight, bias = contiguous(op, x=x, weight=weight, bias=bias)
    check_out(op, out, backend=backend, shape=shape, dtype=result, inputs={"x": x, "weight": weight, "bias": bias})
    if out is None and result != dtype:
        out = new_output(x, shape, result)
    y = backend.linear(_rows(x, weight.shape[1]), weight, bias, activation, precision,
                       None if out is None else _rows(out, weight.shape[0]))
    return out if out is not None else y.reshape(shape)


@public
def linear_backward(grad_y, x, weight, *, y=None, activation=None, precision=None):
    """Gradients of linear: returns (grad_x, grad_w, grad_b), grad_x shaped like x (any leading dimensions).

    With ``activation="relu"``, ``y`` (the forward output) masks grad_y.
    grad_b is always returned (the sum of the masked grad_y over the batch).
    An empty batch gives an empty grad_x and zero grad_w and grad_b.
    Layout: strided inputs are copied once.
    """
    op = "linear_backward"
    backend = select(op, grad_y=grad_y, x=x, weight=weight, y=y)
    dtype = check_float(op, backend, grad_y=grad_y, x=x, weight=weight, y=y)
    shape = linear_shapes(op, x, weight, None)
    if tuple(grad_y.shape) != shape:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {shape}")
    check_activation(op, activation)
    check_saved_output(op, activation, y, shape)
    precision = resolve_precision(precision, op=op, dtype=dtype)
    if 0 in shape:
        return (zeros_result(x, x.shape, dtype), zeros_result(x, weight.shape, dtype),
                zeros_result(x, weight.shape[:1], dtype))
    grad_y, x, weight, y = contiguous(op, grad_y=grad_y, x=x, weight=weight, y=y)
    out_features, in_features = weight.shape
    grad_x, grad_w, grad_b = backend.linear_backward(
        _rows(grad_y, out_features), _rows(x, in_features), weight, None if y is None else _rows(y, out_features),
        activation, precision,
    )
    return grad_x.reshape(x.shape), grad_w, grad_b
