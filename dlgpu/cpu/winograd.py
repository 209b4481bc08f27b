"""Winograd F(2x2, 3x3) for the CPU convolution: 3x3 filters, stride 1, no dilation.

    applies(weight_shape, stride, dilation, precision) -> bool
    correlate(src, mask, mask_relu, weight, bias, relu, y, padding)   as conv2d's _correlate, for those shapes

Each 2x2 block of outputs is A^T [(G g G^T) * (B^T d B)] A for the 4x4 input
tile d under it: 16 products per (output channel, input channel) instead of
36.  Over a band of tiles that is 16 independent products
M[e] (K, T) = U[e] (K, C) @ V[e] (C, T), one per tile entry e, run in the
same 4 x 64 register tiles as every other product (tile.py), 64 tiles of
the image along the vectors.

A work item is an image's band of tile rows, in one parallel loop: copy the
input rows into a zero-padded block (blocks.fill_block, which also masks
grad_y by the ReLU when this computes a data gradient), transform the block
into V, then for each 4 output channels x 64 tiles: the 16 products into a
small buffer, and the output transform A^T . A straight from it into y, with
bias and ReLU.  U is transformed once per call.

The transforms' coefficients are 0, +-1 and +-1/2, so float32 loses far
less than the 5e-5 tolerance.  Tensor-core precisions keep the direct
product (their emulation rounds the operands of the product the GPU
actually runs), and so do inputs holding NaN or +-inf: the transforms mix a
tile's pixels (inf - inf = NaN), so they would spread specials to outputs a
direct convolution keeps finite or infinite.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.blocks import fill_block
from dlgpu.cpu.threads import SERIAL_MACS, launch
from dlgpu.cpu.tile import FASTMATH, WIDE, accumulate, clear, spill, stack_offsets, stack_tile

# Winograd is used while the layer has at least this many input channels: the
# products' depth is C, and the transforms cost (C + K) per tile whatever C is.
# Measured on ResNet-like 3x3 layers (one thread): at C = 16 it beats the direct
# product by 1.3x (16 -> 16 channels, 56x56), at C = 8 they are even.
_MIN_CHANNELS = 16

# Tiles a work item covers, at most: its V (16 x C x tiles) and the block stay
# within a few MB; the products re-read only 64 tiles' worth at a time.
_BAND_TILES = 512

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(weight_shape, stride, dilation, precision) -> bool:
    """3x3, stride 1, no dilation, exact arithmetic, and enough input channels to amortize the transforms."""
    _, channels, kh, kw = weight_shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and precision == "ieee"
        and channels >= _MIN_CHANNELS
    )


def _filters(weight):
    """U (16, K, C) flat: G g G^T for every (k, c) filter g, computed in float64.

    By einsum, whose own loops run on this thread: np.matmul would hand the
    small products to BLAS, whose pool this backend never wakes (threads.py).
    """
    u = np.einsum("ia,kcab,jb->ijkc", _G, weight.astype(np.float64), _G)
    return np.ascontiguousarray(u, dtype=weight.dtype).reshape(-1)


@njit(cache=True, boundscheck=False)
def _transform_input(block, rows, pitch, tile_rows, tiles_w, v, t_pitch):
    """v[e*C*t_pitch + c*t_pitch + t] = (B^T d B)[e] for the 4x4 tile d of the block at tile t (row-major).

    Row-at-a-time: B^T combines the four block rows of a tile row (contiguous loops),
    then B^T along each row writes the 16 entries as runs of tiles_w values.
    """
    channels = block.size // (rows * pitch)
    plane = rows * pitch
    e_rows = np.empty((4, pitch), block.dtype)
    for c in range(channels):
        for tr in range(tile_rows):
            top = c * plane + 2 * tr * pitch
            d0 = block[top:top + pitch]
            d1 = block[top + pitch:top + 2 * pitch]
            d2 = block[top + 2 * pitch:top + 3 * pitch]
            d3 = block[top + 3 * pitch:top + 4 * pitch]
            for u in range(pitch):
                e_rows[0, u] = d0[u] - d2[u]
                e_rows[1, u] = d1[u] + d2[u]
                e_rows[2, u] = d2[u] - d1[u]
                e_rows[3, u] = d1[u] - d3[u]
            t0 = tr * tiles_w
            for a in range(4):
                row = e_rows[a]
                base = (4 * a * channels + c) * t_pitch + t0
                stride_e = channels * t_pitch
                for tw in range(tiles_w):
                    u = 2 * tw
                    v[base + tw] = row[u] - row[u + 2]
                    v[base + stride_e + tw] = row[u + 1] + row[u + 2]
                    v[base + 2 * stride_e + tw] = row[u + 2] - row[u + 1]
                    v[base + 3 * stride_e + tw] = row[u + 1] - row[u + 3]


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _winograd(src, mask, mask_relu, u, bias, has_bias, relu, y, pad_h, pad_w, band):
    """y = act(correlate(src padded, the filters whose transforms are u) + bias), per (image, band) item."""
    n_images, channels = src.shape[0], src.shape[1]
    k_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tile_rows_n, width = WIDE
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    bands = (tiles_h + band - 1) // band
    pitch = 2 * tiles_w + 2
    block_rows = 2 * band + 2
    t_pitch = ((band * tiles_w + width - 1) // width) * width
    steps = np.arange(channels).astype(np.uint64)
    v_steps = np.arange(channels) * t_pitch
    zero = y.dtype.type(0)
    for item in prange(n_images * bands):
        n = item // bands
        th0 = (item % bands) * band
        rows_here = min(band, tiles_h - th0)
        tiles = rows_here * tiles_w
        block = np.empty(channels * block_rows * pitch, y.dtype)
        fill_block(block, src, mask, mask_relu, n, 2 * th0, block_rows, pitch, pad_h, pad_w, 1, 1)
        v = np.empty(16 * channels * t_pitch, y.dtype)  # columns past the band's tiles: dropped
        _transform_input(block, block_rows, pitch, rows_here, tiles_w, v, t_pitch)
        m = np.empty((16, tile_rows_n, width), y.dtype)
        o = np.empty((4, width), y.dtype)
        tile = stack_tile(tile_rows_n, width, y.dtype)
        a_row = stack_offsets(tile_rows_n)
        # 64 tiles at a time, all output channels: the 16 slices of V they read (16 x C x 64)
        # stay in L2 while every block of 4 channels passes over them.
        for t0 in range(0, tiles, width):
            for k0 in range(0, k_out, tile_rows_n):
                for e in range(16):
                    for r in range(tile_rows_n):
                        a_row[r] = np.uint64((e * k_out + min(k0 + r, k_out - 1)) * channels)
                    clear(tile)
                    accumulate(tile, u, a_row, steps, v, v_steps, e * channels * t_pitch + t0, 0, channels)
                    spill(tile, m[e])
                # Output transform A^T m A: the 2x2 outputs of each (channel, tile) into o, vectorized
                # over the 64 tiles, then out to y a run of tiles within one tile row at a time.
                count = min(width, tiles - t0)
                for r in range(min(tile_rows_n, k_out - k0)):
                    k = k0 + r
                    add = bias[k] if has_bias else zero
                    for j in range(count):
                        s00 = m[0, r, j] + m[4, r, j] + m[8, r, j]
                        s01 = m[1, r, j] + m[5, r, j] + m[9, r, j]
                        s02 = m[2, r, j] + m[6, r, j] + m[10, r, j]
                        s03 = m[3, r, j] + m[7, r, j] + m[11, r, j]
                        s10 = m[4, r, j] - m[8, r, j] - m[12, r, j]
                        s11 = m[5, r, j] - m[9, r, j] - m[13, r, j]
                        s12 = m[6, r, j] - m[10, r, j] - m[14, r, j]
                        s13 = m[7, r, j] - m[11, r, j] - m[15, r, j]
                        o[0, j] = s00 + s01 + s02 + add
                        o[1, j] = s01 - s02 - s03 + add
                        o[2, j] = s10 + s11 + s12 + add
                        o[3, j] = s11 - s12 - s13 + add
                    if relu:
                        for i in range(4):
                            for j in range(count):
                                if o[i, j] < zero:
                                    o[i, j] = zero  # NaN propagates, as np.maximum(v, 0) does
                    j = 0
                    while j < count:
                        t = t0 + j
                        tw = t % tiles_w
                        p = 2 * (th0 + t // tiles_w)
                        run = min(count - j, tiles_w - tw)
                        # The last tile of a row has no right column when Q is odd.
                        pairs = run - 1 if tw + run == tiles_w and out_w % 2 == 1 else run
                        for i in range(2):
                            if p + i >= out_h:
                                break
                            row = y[n, k, p + i, 2 * tw:]
                            left = o[2 * i, j:j + run]
                            right = o[2 * i + 1, j:j + run]
                            for jj in range(pairs):
                                row[2 * jj] = left[jj]
                                row[2 * jj + 1] = right[jj]
                            if pairs < run:
                                row[2 * pairs] = left[pairs]
                        j += run


# Multiplications the direct product does per one of Winograd's: 36 / 16.
SAVING = 2.25


def _band(out_h, out_w) -> int:
    """Tile rows per work item: of the counts that fit _BAND_TILES tiles, the one whose tiles best
    fill the 64-wide columns (the most rows among equals); at least one."""
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    width = WIDE[1]
    most = max(1, min(tiles_h, _BAND_TILES // tiles_w))
    return max(range(1, most + 1), key=lambda rows: (rows * tiles_w / (-(-rows * tiles_w // width) * width), rows))


def kept(out_h, out_w) -> float:
    """The fraction of the products' 64-wide tile columns that hold real tiles (a band's tiles, rounded up)."""
    tiles = _band(out_h, out_w) * ((out_w + 1) // 2)
    width = WIDE[1]
    return tiles / (-(-tiles // width) * width)


def correlate(src, mask, mask_relu, weight, bias, relu, y, padding):
    """y = act(correlate(V, weight) + bias) for 3x3 filters, stride 1, no dilation (see conv2d._correlate)."""
    has_bias = bias is not None
    bias = bias if has_bias else np.zeros(1, y.dtype)
    band = _band(*y.shape[2:])
    serial = y.size * weight.shape[1] * 4 < SERIAL_MACS  # 16 products per 4 outputs
    launch(_winograd, serial, src, mask, mask_relu, _filters(weight), bias, has_bias, relu, y, *padding, band)
