"""CPU matrix products: matmul and linear, forward and backward, in numba register tiles.

    matmul(a, b, ta, tb, precision, out)           op(a) @ op(b); op = .T when t*
    matmul_backward(gc, a, b, ta, tb, precision)   -> (grad_a, grad_b)
    linear(x, w, bias, act, precision, out)        act(x @ w.T + bias); x (B, in), w (out, in)
    linear_backward(gy, x, w, y, act, precision)   -> (grad_x, grad_w, grad_b)
    round_operand(a, precision)                    the tensor-core operand rounding, emulated

One kernel, _product, computes every product: tiles of 4 rows x 64 columns
(tile.py), one numba parallel loop, no BLAS call.  BLAS runs these products
about as fast per core (256x784 @ 784x512 float32, one core: 104 GFLOP/s
here, 105 OpenBLAS), but its threads are a second pool that spins and fights
numba's (threads.py has the measurements); here every op of the backend runs
on one pool, and each result is the same bits for any thread count.  The
left operand is read in place through its strides, so a transposed view
costs nothing; the right one is copied once into a panel of 64-column
blocks, each (K, 64) contiguous: one tile's vector loads are one stream.
When N is short (a 10-class layer) the product is computed transposed, so
that the long side fills the vectors, and stored transposed.  Bias and ReLU
are the product's epilogue.

Precision emulation (float32 only): "tf32", "bf16" and "fp16" round each
OPERAND the way a tensor core sees it (tf32: 10 mantissa bits, bf16: 7 bits,
both round-to-nearest-even; fp16: IEEE half), then multiply and accumulate
in fp32.  So a result computed at "tf32" differs from "ieee" exactly as much
as the GPU's would, and the tolerance tests mean something on the CPU.
float64 inputs ignore the precision, as PyTorch's TF32 switch does:
tensor-core modes are an fp32 feature.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.threads import SERIAL_ELEMENTS, SERIAL_MACS, launch
from dlgpu.cpu.tile import FASTMATH, WIDE, accumulate, clear, spill, stack_offsets, stack_tile

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
    launch(
        _round_mantissa, a.size < SERIAL_ELEMENTS,
        a.reshape(-1).view(np.uint32), rounded.reshape(-1).view(np.uint32), _DROPPED_BITS[precision],
    )
    return rounded


# Rows of the output one work item covers (8 tiles): its panel of 64 columns of
# the right operand stays in L2 while the item's tiles pass over it.
_ITEM_ROWS = 32


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _product(a, row_step, depth_step, panel, c, bias, has_bias, relu, transposed):
    """c = act(A @ B + bias), A[i, k] = a[i*row_step + k*depth_step], B[k, j] = panel[j // 64, k, j % 64].

    A is (M, K), M = c's rows, or c's columns if ``transposed``: then c holds the
    product's transpose (bias still goes with c's columns).  Work items: a band of
    _ITEM_ROWS rows x 64 columns; items that share the columns are consecutive.
    """
    tile_rows, width = WIDE
    m_rows = c.shape[1] if transposed else c.shape[0]
    n_cols = c.shape[0] if transposed else c.shape[1]
    column_blocks, depth = panel.shape[0], panel.shape[1]
    bands = (m_rows + _ITEM_ROWS - 1) // _ITEM_ROWS
    steps = (np.arange(depth) * depth_step).astype(np.uint64)
    panel_steps = np.arange(depth) * width
    flat_panel = panel.reshape(-1)
    zero = c.dtype.type(0)
    for item in prange(column_blocks * bands):
        j0 = (item // bands) * width
        first_row = (item % bands) * _ITEM_ROWS
        tile = stack_tile(tile_rows, width, c.dtype)
        done = np.empty((tile_rows, width), c.dtype)
        a_row = stack_offsets(tile_rows)
        for i0 in range(first_row, min(m_rows, first_row + _ITEM_ROWS), tile_rows):
            for r in range(tile_rows):
                a_row[r] = np.uint64(min(i0 + r, m_rows - 1) * row_step)  # rows past M: computed, dropped
            clear(tile)
            accumulate(tile, a, a_row, steps, flat_panel, panel_steps, j0 * depth, 0, depth)
            spill(tile, done)
            for r in range(min(tile_rows, m_rows - i0)):
                i = i0 + r
                for j in range(min(width, n_cols - j0)):
                    value = done[r, j]
                    if has_bias:
                        value += bias[i] if transposed else bias[j0 + j]
                    if relu and value < zero:
                        value = zero  # NaN propagates, as np.maximum(v, 0) does
                    if transposed:
                        c[j0 + j, i] = value
                    else:
                        c[i, j0 + j] = value


def _flat_with_steps(a: np.ndarray):
    """(flat buffer, row step, column step) in elements of a 2-D array or transposed view.

    Only an array that is neither C- nor F-contiguous is copied.
    """
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    flat = a.reshape(-1) if a.flags.c_contiguous else a.T.reshape(-1)
    # A dimension of length 1 may carry any stride; its index is always 0.
    row_step, column_step = (s // a.itemsize if n > 1 else 0 for s, n in zip(a.strides, a.shape))
    return flat, row_step, column_step


def _panel(b: np.ndarray) -> np.ndarray:
    """b (K, N) as (ceil(N / 64), K, 64): each tile's 64 columns one contiguous stream, zero-padded."""
    depth, n_cols = b.shape
    width = WIDE[1]
    blocks = -(-n_cols // width)
    panel = np.empty((blocks, depth, width), b.dtype)
    full = n_cols // width
    panel[:full] = b[:, : full * width].reshape(depth, full, width).transpose(1, 0, 2)
    if full < blocks:
        panel[full, :, : n_cols - full * width] = b[:, full * width:]
        panel[full, :, n_cols - full * width:] = 0
    return panel


def _kept(n: int, multiple: int) -> float:
    """The fraction of n rounded up to a multiple that is real work."""
    return n / (-(-n // multiple) * multiple)


def computes_transposed(m_rows: int, n_cols: int) -> bool:
    """Whether an (M, N) product is computed as its transpose: when M fills the 64-wide vectors better."""
    rows, width = WIDE
    return _kept(m_rows, width) * _kept(n_cols, rows) > _kept(n_cols, width) * _kept(m_rows, rows)


def _matmul_into(left, right, out, bias=None, relu=False):
    """out (M, N) = act(left (M, K) @ right (K, N) + bias); the operands may be transposed views."""
    has_bias = bias is not None
    bias = bias if has_bias else out.reshape(-1)[:1]  # numba needs an array either way
    serial = out.size * left.shape[1] < SERIAL_MACS
    if not computes_transposed(*out.shape):
        flat, row_step, depth_step = _flat_with_steps(left)
        launch(_product, serial, flat, row_step, depth_step, _panel(right), out, bias, has_bias, relu, False)
    else:  # out.T = right.T @ left.T, so that the longer side M runs along the tiles' vectors
        flat, row_step, depth_step = _flat_with_steps(right.T)
        launch(_product, serial, flat, row_step, depth_step, _panel(left.T), out, bias, has_bias, relu, True)
    return out


def _new_product(left, right):
    return _matmul_into(left, right, np.empty((left.shape[0], right.shape[1]), dtype=left.dtype))


def _op(a: np.ndarray, transpose: bool) -> np.ndarray:
    return a.T if transpose else a


def matmul(a, b, transpose_a, transpose_b, precision, out):
    """op(a) @ op(b) into ``out`` (or a new array); a, b 2-D of one float dtype."""
    left = _op(round_operand(a, precision), transpose_a)
    right = _op(round_operand(b, precision), transpose_b)
    if out is None:
        return _new_product(left, right)
    return _matmul_into(left, right, out)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision):
    """(grad_a, grad_b) of c = op(a) @ op(b), each shaped like its operand."""
    grad_c = round_operand(grad_c, precision)
    op_a = _op(round_operand(a, precision), transpose_a)
    op_b = _op(round_operand(b, precision), transpose_b)
    # d op(a) = gc @ op(b).T and d op(b) = op(a).T @ gc; a transposed operand takes the
    # transpose of its gradient, written as the product in the other order.
    grad_a = _new_product(op_b, grad_c.T) if transpose_a else _new_product(grad_c, op_b.T)
    grad_b = _new_product(grad_c.T, op_a) if transpose_b else _new_product(op_a.T, grad_c)
    return grad_a, grad_b


def linear(x, weight, bias, activation, precision, out):
    """act(x @ weight.T + bias) into ``out`` (or a new (B, out_features) array)."""
    left = round_operand(x, precision)
    right = round_operand(weight, precision).T
    if out is None:
        out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    return _matmul_into(left, right, out, bias, activation == "relu")


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
    launch(_mask_and_column_sum, grad_y.size < SERIAL_ELEMENTS, grad_y, y if relu else grad_y, relu, masked, grad_b)
    masked = round_operand(masked, precision)
    grad_x = _new_product(masked, round_operand(weight, precision))
    grad_w = _new_product(masked.T, round_operand(x, precision))
    return grad_x, grad_w, grad_b


class GemmOps:
    """The CPU backend's products (see dlgpu.backend.Backend)."""

    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)
