"""Register tiles: the one inner loop of the CPU backend's products (convolutions, matmul, linear).

    tile = stack_tile(rows, width, dtype)      an (R, W) block of accumulators on the stack
    accumulate(tile, a, a_row, a_step, b, b_step, b_col, k_lo, k_hi)
        tile[r, j] += a[a_row[r] + a_step[k]] * b[b_step[k] + b_col + j]   for k in [k_lo, k_hi)

An outer product per step: W consecutive elements of b (one to four vector
loads) times R scalars of a (broadcasts), into R*W accumulators that stay in
vector registers for the whole reduction.  The operands are addressed through
offset tables, so one loop serves a plain product, a convolution whose input
rows are read in place at shifted offsets (no im2col buffer), and one whose
"rows" are output pixels scattered over the image.

Two details decide whether numba emits register tiles, measured on an
AVX-512 core (float32, 64x64 by 64x2048):
  * the accumulators live on the stack (an alloca): LLVM can prove that no
    load of a or b aliases them and keeps them in registers across the loop.
    In an np.empty array (heap memory it must assume may alias) every update
    is a load and a store: 40 GFLOP/s instead of 80, where OpenBLAS's sgemm
    runs 65-85 on the same core.
  * a's offsets are unsigned: numba then emits no negative-index wraparound
    per scalar of a (the 16x16 tile went from 50 to 85 GFLOP/s).
The caller must be compiled with FASTMATH (fused multiply-add) and use a
tile in one pattern: clear, accumulate, then read it out by full loops over
its shape (spill it to an array for an epilogue that picks elements by
computed indices).  accumulate is inlined, so the tile's alloca is the
caller's; a tile loaded from an array, or indexed by a computed bound, stays
in memory (measured: 4x slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.numpy_support import carray

# Flags for every kernel that accumulates tiles: contract a*b + c into one FMA.
# No reassociation: each output adds its terms in the order of its offset
# table, so results are the same bits on every call.
FASTMATH = {"contract"}

# Tile shapes, as (rows, width).  In float32 both hold 16 vectors of
# accumulators (half of AVX-512's 32 registers, leaving room for the operands;
# float64 tiles take twice the registers and spill some, as would float32 on a
# CPU without AVX-512: 32 registers' worth against its 16, speed not measured):
#   WIDE:   4 x 64 -- b runs along a long axis (output pixels of a row, or 64+
#           output channels); 4 vector loads and 4 broadcasts per 16 FMAs.
#   SQUARE: 16 x 16 -- b is short (16 output channels): 1 vector load and 16
#           broadcasts per 16 FMAs.
WIDE = (4, 64)
SQUARE = (16, 16)
# The stack tile's size in elements: the larger of the two shapes.
_TILE_ELEMENTS = 256


@intrinsic
def _stack_buffer(typingctx, size, dtype):
    """A pointer to ``size`` (a compile-time constant) elements of ``dtype`` on the caller's stack frame."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    count = size.literal_value
    element = dtype.dtype

    def codegen(context, builder, signature, args):
        # alloca_once places the alloca in the entry block, so a tile made inside a loop is one buffer.
        return cgutils.alloca_once(builder, context.get_value_type(element), size=count)

    return types.CPointer(element)(size, dtype), codegen


@njit(inline="always")
def stack_tile(rows, width, dtype):
    """An uninitialized (rows, width) array on the stack; rows * width <= 256."""
    return carray(_stack_buffer(_TILE_ELEMENTS, dtype), (rows, width))


@njit(inline="always")
def stack_offsets(rows):
    """An uninitialized (rows,) uint64 array on the stack, for a tile's a_row; rows <= 16.

    On the stack for the same reason as the tile: LLVM then knows the tile's
    updates cannot change it, and hoists its loads out of the reduction loop.
    """
    return carray(_stack_buffer(16, np.uint64), (rows,))


@njit(inline="always", fastmath=FASTMATH, boundscheck=False)
def accumulate(tile, a, a_row, a_step, b, b_step, b_col, k_lo, k_hi):
    """tile[r, j] += a[a_row[r] + a_step[k]] * b[b_step[k] + b_col + j] for k in [k_lo, k_hi).

    a, b: flat arrays.  a_row (R,) and a_step (K,): uint64 offsets into a; b_step (K,) and
    b_col: int64 offsets into b.  (Mixing the two in one sum would make numba compute it in
    float64; b's offsets stay signed because they only form the start of a slice.)
    """
    rows, width = tile.shape
    for k in range(k_lo, k_hi):
        start = b_step[k] + b_col
        vector = b[start:start + width]
        offset = a_step[k]
        for j in range(width):
            value = vector[j]
            for r in range(rows):
                tile[r, j] += a[a_row[r] + offset] * value


@njit(inline="always")
def clear(tile):
    rows, width = tile.shape
    for r in range(rows):
        for j in range(width):
            tile[r, j] = 0


@njit(inline="always")
def spill(tile, out):
    """out[r, j] = tile[r, j]: an epilogue that picks elements by computed indices reads ``out``.

    Indexing the tile itself with anything but loop counters over its full
    shape keeps LLVM from holding it in registers during the reduction.
    """
    rows, width = tile.shape
    for r in range(rows):
        for j in range(width):
            out[r, j] = tile[r, j]

