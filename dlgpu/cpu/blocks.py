"""The input block of a convolution work item: the input rows it reads, zero-padded, one plane per channel.

    fill_block(block, src, mask, relu, n, top, rows, pitch, pad_h, pad_w, up_h, up_w)
    taps_of(channels, kh, kw, plane, pitch, dh, dw) -> int64 offsets of the filter taps within a block

A block holds ``rows`` rows of ``pitch`` columns per channel, starting at
virtual row ``top`` of the padded input.  Filter tap (c, r, s) then reads
every output's input at one fixed offset from that output's base, so the
products address the block instead of an unfolded (im2col) copy.  The copy
also does what the data gradient needs on the way: the ReLU mask of grad_y,
and the zeros a strided forward pass leaves between its outputs.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit


@njit(cache=True)
def _index_range(count, offset, step, lo, hi):
    """[first, last): the indices i < count with lo <= offset + i*step < hi (step >= 1)."""
    first = 0 if offset >= lo else (lo - offset + step - 1) // step
    last = (hi - 1 - offset) // step + 1 if hi - 1 - offset >= 0 else 0
    last = min(last, count)
    return first, max(first, last)


@njit(cache=True, boundscheck=False)
def fill_block(block, src, mask, relu, n, top, rows, pitch, pad_h, pad_w, up_h, up_w):
    """block[c*rows*pitch + i*pitch + u] = V[c, top + i, u] for image n, zero elsewhere (the whole block).

    V is the virtual input: V[c, pad_h + h*up_h, pad_w + w*up_w] = src[n, c, h, w],
    masked to zero where mask <= 0 (or NaN) if relu, and zero at every other place.
    Paddings may be negative (a crop); up > 1 inserts zeros between pixels.
    """
    channels, height, width = src.shape[1], src.shape[2], src.shape[3]
    plane = rows * pitch
    block[:] = 0
    h_lo, h_hi = _index_range(height, pad_h - top, up_h, 0, rows)
    w_lo, w_hi = _index_range(width, pad_w, up_w, 0, pitch)
    zero = block.dtype.type(0)
    for c in range(channels):
        for h in range(h_lo, h_hi):
            row = src[n, c, h]
            keep = mask[n, c, h]
            base = c * plane + (pad_h + h * up_h - top) * pitch + pad_w
            if up_w == 1:  # the common case, in loops the compiler vectorizes
                dst = block[base + w_lo:base + w_hi]
                if relu:
                    for w in range(w_hi - w_lo):
                        dst[w] = row[w_lo + w] if keep[w_lo + w] > zero else zero
                else:
                    dst[:] = row[w_lo:w_hi]
                continue
            for w in range(w_lo, w_hi):
                value = row[w]
                if relu and not keep[w] > zero:
                    value = zero
                block[base + w * up_w] = value


@functools.lru_cache(maxsize=64)
def taps_of(channels, kh, kw, plane, pitch, dh, dw):
    """Offsets of the filter taps (c, r, s), in OIHW order, within a block: c*plane + r*dh*pitch + s*dw.

    Cached per geometry (a network calls each layer's few geometries over and over), so read-only.
    """
    c, r, s = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    taps = (c * plane + r * dh * pitch + s * dw).reshape(-1).astype(np.int64)
    taps.flags.writeable = False
    return taps
