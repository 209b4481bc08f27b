"""CPU matrix products: matmul and linear, forward and backward, through NumPy's BLAS.

    matmul(a, b, ta, tb, precision, out)           op(a) @ op(b); op = .T when t*
    matmul_backward(gc, a, b, ta, tb, precision)   -> (grad_a, grad_b)
    linear(x, w, bias, act, precision, out)        act(x @ w.T + bias); x (B, in), w (out, in)
    linear_backward(gy, x, w, y, act, precision)   -> (grad_x, grad_w, grad_b)
    round_operand(a, precision)                    the tensor-core operand rounding, emulated

Transposes are never materialized: np.matmul receives transposed views and
hands BLAS the transpose flag.  The bias + ReLU epilogue is one numba pass
over the GEMM's output, in place.

Precision emulation (float32 only): "tf32", "bf16" and "fp16" round each
OPERAND the way a tensor core sees it (tf32: 10 mantissa bits, bf16: 7 bits,
both round-to-nearest-even; fp16: IEEE half), then multiply and accumulate
in fp32 (sgemm).  So a result computed at "tf32" differs from "ieee" exactly
as much as the GPU's would, and the tolerance tests mean something on the
CPU.  float64 inputs ignore the precision, as PyTorch's TF32 switch does:
tensor-core modes are an fp32 feature.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Mantissa bits a float32 keeps after rounding to each tensor-core input format.
_DROPPED_BITS = {"tf32": 23 - 10, "bf16": 23 - 7}


@njit(parallel=True, cache=True)
def _round_mantissa(src, dst, dropped_bits):
    """dst = src (float32 bits, flat) rounded to nearest-even, dropping the low ``dropped_bits``."""
    low_mask = np.uint32((1 << dropped_bits) - 1)
    half_minus_one = np.uint32((1 << (dropped_bits - 1)) - 1)
    exponent_mask = np.uint32(0x7F800000)
    for i in prange(src.size):
        bits = src[i]
        if (bits & exponent_mask) == exponent_mask:
            dst[i] = bits  # inf and NaN pass unchanged (rounding could turn a NaN into inf)
        else:
            # Adding half-an-ulp-minus-one plus the kept LSB rounds ties to even; a carry
            # into the exponent is the correct rounding up (to inf at the very top).
            lsb = (bits >> np.uint32(dropped_bits)) & np.uint32(1)
            dst[i] = (bits + half_minus_one + lsb) & ~low_mask


def round_operand(a: np.ndarray, precision: str) -> np.ndarray:
    """``a`` as a tensor core would read it at ``precision`` (a new float32 array), or ``a``.

    Only float32 is rounded; "ieee" and float64 return ``a`` itself.
    """
    if precision == "ieee" or a.dtype != np.float32:
        return a
    if precision == "fp16":
        return a.astype(np.float16).astype(np.float32)
    rounded = np.empty_like(a)
    _round_mantissa(a.reshape(-1).view(np.uint32), rounded.reshape(-1).view(np.uint32), _DROPPED_BITS[precision])
    return rounded


def _op(a: np.ndarray, transpose: bool) -> np.ndarray:
    return a.T if transpose else a


def matmul(a, b, transpose_a, transpose_b, precision, out):
    """op(a) @ op(b) into ``out`` (or a new array); a, b 2-D of one float dtype."""
    a = round_operand(a, precision)
    b = round_operand(b, precision)
    return np.matmul(_op(a, transpose_a), _op(b, transpose_b), out=out)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision):
    """(grad_a, grad_b) of c = op(a) @ op(b), each shaped like its operand."""
    grad_c = round_operand(grad_c, precision)
    op_a = _op(round_operand(a, precision), transpose_a)
    op_b = _op(round_operand(b, precision), transpose_b)
    # d op(a) = gc @ op(b).T and d op(b) = op(a).T @ gc; a transposed operand takes the
    # transpose of its gradient, written as the product in the other order.
    grad_a = np.matmul(op_b, grad_c.T) if transpose_a else np.matmul(grad_c, op_b.T)
    grad_b = np.matmul(grad_c.T, op_a) if transpose_b else np.matmul(op_a.T, grad_c)
    return grad_a, grad_b


@njit(parallel=True, cache=True)
def _bias_act_rows(y, bias, has_bias, relu):
    """In place on y (B, F): y += bias (if has_bias), then max(y, 0) (if relu); rows in parallel."""
    rows, cols = y.shape
    zero = y.dtype.type(0)
    for i in prange(rows):
        row = y[i]
        for j in range(cols):
            v = row[j]
            if has_bias:
                v += bias[j]
            if relu and v < zero:
                v = zero  # NaN propagates, as np.maximum(v, 0) does
            row[j] = v


def linear(x, weight, bias, activation, precision, out):
    """act(x @ weight.T + bias) into ``out`` (or a new (B, out_features) array)."""
    y = matmul(x, weight, False, True, precision, out)
    relu = activation == "relu"
    if bias is not None or relu:
        _bias_act_rows(y, bias if bias is not None else y[0], bias is not None, relu)
    return y


# Columns one thread sums over all rows: wide enough for whole cache lines, narrow
# enough that a 512-feature layer still splits over the cores.
_COLUMN_BLOCK = 64


@njit(parallel=True, cache=True)
def _mask_and_column_sum(grad_y, y, relu, masked, column_sum):
    """masked = grad_y * (y > 0) (if relu, else a copy); column_sum = sum over rows, in float64.

    Each thread owns a block of columns and walks the rows in order, so the sum is
    the same whatever the number of threads.
    """
    rows, cols = grad_y.shape
    zero = grad_y.dtype.type(0)
    n_blocks = (cols + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for block in prange(n_blocks):
        start = block * _COLUMN_BLOCK
        stop = min(start + _COLUMN_BLOCK, cols)
        acc = np.zeros(stop - start, dtype=np.float64)
        for i in range(rows):
            for j in range(start, stop):
                g = grad_y[i, j]
                if relu and not y[i, j] > zero:
                    g = zero
                masked[i, j] = g
                acc[j - start] += g
        for j in range(start, stop):
            column_sum[j] = acc[j - start]


def linear_backward(grad_y, x, weight, y, activation, precision):
    """(grad_x, grad_w, grad_b) of y = act(x @ weight.T + bias); ``y`` supplies the ReLU mask."""
    relu = activation == "relu"
    masked = np.empty_like(grad_y)
    grad_b = np.empty(grad_y.shape[1], dtype=grad_y.dtype)
    _mask_and_column_sum(grad_y, y if relu else grad_y, relu, masked, grad_b)
    masked = round_operand(masked, precision)
    grad_x = np.matmul(masked, round_operand(weight, precision))
    grad_w = np.matmul(masked.T, round_operand(x, precision))
    return grad_x, grad_w, grad_b


class GemmOps:
    """The CPU backend's products (see dlgpu.backend.Backend)."""

    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)
