"""CPU 2-D convolution (NCHW x, OIHW weight): forward, backward-data, backward-weights.

    conv2d(x, w, bias, stride, padding, dilation, act, precision, out)        -> y (N, K, P, Q)
    conv2d_backward(gy, x, w, y, stride, padding, dilation, act, precision)   -> (gx, gw, gb)

Every pass is one numba parallel loop over independent work items, and every
product is a direct convolution accumulated in register tiles (tile.py): no
im2col buffer, no BLAS call.  One parallel loop per pass matters as much as
the arithmetic: each loop is a fork and a join, and on a shared machine every
join waits for the slowest thread to be scheduled again (see threads.py).

The input block (blocks.py).  A work item (an image, or a band of its output
rows) first copies the input rows it reads into a zero-padded block, one
plane per channel, pitch = (Q-1)*stride + (S-1)*dilation + 1 columns per row:
exactly the columns its outputs reach.  Then tap (c, r, s) of the filter reads
the block at the fixed offset c*plane + r*dil*pitch + s*dil from an output's
own base, for every output: the unfold is in the addressing.

Three ways to run a forward product; forward_plan picks the one that drops
the least work (the tiles round shapes up to their multiples):
  rows     (stride 1): a tile is 4 output channels x 64 consecutive block
           positions of one image.  Tap (c, r, s) shifts the whole run of 64,
           so b is a contiguous slice of the block and a the 4 filter weights.
           Positions in the pitch - Q columns past each row's end are
           computed and dropped: LeNet's 5x5 on 28x28 keeps 24 of 28.
  pixels   (any stride): a tile is 16 output pixels x 16 output channels; b
           is the filters transposed (taps x channels, padded to 16), a the
           block at each pixel's base.  Nothing is dropped but channel
           padding: the choice for 16, 32, 64... output channels.
  winograd (3x3, stride 1, 16+ input channels, finite inputs; winograd.py):
           F(2x2, 3x3), 2.25x fewer multiplications, where an image has
           enough 2x2 tiles to fill the products' 64-wide columns.
The data gradient (data_gradient_plan) is either the forward machinery again
-- grad_y, ReLU-masked and zero-inserted by the stride, correlated with the
flipped, transposed filters at padding dil*(R-1) - pad; the block builder
masks and inserts while it copies -- or "fold", for few input channels or a
stride: each image's unfolded gradient W^T @ g, 4 taps x 64 pixels a tile,
added back onto grad_x one output row at a time.  The weight gradient is a
third product: a tile is 16 taps x 16 output channels, reduced over output
pixels, b the masked grad_y transposed per pixel (so its channels are
contiguous), a the block at each tap's offset plus the pixel's base; grad_b
is summed in the same pass.

Precision emulation rounds the operands first (round_operand), as the GPU's
tensor cores read them.  Determinism: a work item's outputs are its own and
each adds its terms in one fixed order; the weight gradient's per-item
partial sums are added in item order, in float64.  The items are cut from
the shapes alone, never from the thread count, so every result is the same
bits on every call with any number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu import winograd
from dlgpu.cpu.blocks import fill_block, taps_of
from dlgpu.cpu.gemm import round_operand
from dlgpu.cpu.threads import SERIAL_MACS, launch
from dlgpu.cpu.tile import FASTMATH, SQUARE, WIDE, accumulate, clear, spill, stack_offsets, stack_tile
from dlgpu.window import output_size

# Output positions a forward work item covers, at least (a band of whole rows,
# or the whole image): enough work to hide the item's block copy, small enough
# that ResNet's 8 images still split into dozens of items, and the block
# (channels x band rows x pitch) stays within a core's L2.
_ITEM_POSITIONS = 512

# Output pixels of grad_y the weight gradient transposes at a time: its
# transposed slice (pixels x channels) then stays in L1/L2 while every tile
# of taps passes over it.
_PIXEL_CHUNK = 256

# Output pixels a fold work item covers, at least: several small images fill the 64-wide tiles.
_FOLD_PIXELS = 256

# The weight gradient reduces over images; the images are cut into at most
# this many items (each with its own partial sums, added in order at the end).
_MAX_WEIGHT_ITEMS = 32


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


# ----------------------------------------------------------------------------
# forward products (also backward-data)
# ----------------------------------------------------------------------------


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _forward_rows(src, mask, mask_relu, weights, taps, bias, has_bias, relu, y,
                  pad_h, pad_w, up_h, up_w, band, pitch, block_rows):
    """Stride 1: y[n, k, p, q] = act(sum over taps t of weights[k, t] * block[t + p*pitch + q] + bias[k]).

    weights: flat (K, taps).  Work item: (image, band of ``band`` output rows).
    Tiles: 4 channels x 64 block positions; the pitch - Q positions past each row are dropped.
    """
    n_images = src.shape[0]
    channels = src.shape[1]
    k_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    n_taps = taps.size
    tile_rows, width = WIDE
    bands = (out_h + band - 1) // band
    plane = block_rows * pitch
    steps = np.arange(n_taps).astype(np.uint64)
    zero = y.dtype.type(0)
    for item in prange(n_images * bands):
        n = item // bands
        p0 = (item % bands) * band
        rows_here = min(band, out_h - p0)
        # A run of 64 may start near a band's end and read up to 63 positions past the last
        # row: the zeroed slack behind the last plane keeps those reads inside the block.
        block = np.empty(channels * plane + width + pitch, y.dtype)
        fill_block(block, src, mask, mask_relu, n, p0, block_rows, pitch, pad_h, pad_w, up_h, up_w)
        span = rows_here * pitch
        tile = stack_tile(tile_rows, width, y.dtype)
        done = np.empty((tile_rows, width), y.dtype)
        a_row = stack_offsets(tile_rows)
        for k0 in range(0, k_out, tile_rows):
            for r in range(tile_rows):
                a_row[r] = np.uint64(min(k0 + r, k_out - 1) * n_taps)  # rows past K repeat the last: computed, dropped
            for j0 in range(0, span, width):
                clear(tile)
                accumulate(tile, weights, a_row, steps, block, taps, j0, 0, n_taps)
                spill(tile, done)
                p_first = j0 // pitch
                p_last = min(rows_here, (j0 + width - 1) // pitch + 1)
                for r in range(min(tile_rows, k_out - k0)):
                    k = k0 + r
                    add = bias[k] if has_bias else zero
                    for p in range(p_first, p_last):
                        out_row = y[n, k, p0 + p]
                        shift = p * pitch - j0  # tile column of (p, q) is q + shift
                        q_lo = max(0, -shift)
                        q_hi = min(out_w, width - shift)
                        for q in range(q_lo, q_hi):
                            value = done[r, q + shift] + add
                            if relu and value < zero:
                                value = zero  # NaN propagates, as np.maximum(v, 0) does
                            out_row[q] = value


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _forward_pixels(src, mask, mask_relu, weights_t, k_pad, taps, bias, has_bias, relu, y,
                    stride_h, stride_w, pad_h, pad_w, up_h, up_w, band, pitch, block_rows):
    """y[n, k, p, q] = act(sum over taps t of block[t + base(p, q)] * weights_t[t, k] + bias[k]).

    weights_t: flat (taps, k_pad), output channels padded with zeros to k_pad (a multiple of 16).
    Work item: (image, band of output rows).  Tiles: 16 pixels x 16 channels.
    """
    n_images = src.shape[0]
    channels = src.shape[1]
    k_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    n_taps = taps.size
    tile_rows, width = SQUARE
    bands = (out_h + band - 1) // band
    plane = block_rows * pitch
    steps = np.arange(n_taps) * k_pad
    taps_u = taps.astype(np.uint64)
    planes = y.reshape(n_images, k_out, out_h * out_w)
    zero = y.dtype.type(0)
    for item in prange(n_images * bands):
        n = item // bands
        p0 = (item % bands) * band
        pixels = min(band, out_h - p0) * out_w
        block = np.empty(channels * plane, y.dtype)
        fill_block(block, src, mask, mask_relu, n, p0 * stride_h, block_rows, pitch, pad_h, pad_w, up_h, up_w)
        tile = stack_tile(tile_rows, width, y.dtype)
        done = np.empty((tile_rows, width), y.dtype)
        a_row = stack_offsets(tile_rows)
        p, q = 0, 0  # the pixel of the tile's next row, walked in order (no division per pixel)
        for t0 in range(0, pixels, tile_rows):
            for r in range(tile_rows):
                a_row[r] = np.uint64(p * stride_h * pitch + q * stride_w)
                if t0 + r + 1 < pixels:  # a short last tile repeats its last pixel: computed, dropped
                    q += 1
                    if q == out_w:
                        p, q = p + 1, 0
            count = min(tile_rows, pixels - t0)
            for k0 in range(0, k_pad, width):
                clear(tile)
                accumulate(tile, block, a_row, taps_u, weights_t, steps, k0, 0, n_taps)
                spill(tile, done)
                # The tile's pixels are consecutive in the output plane: one contiguous run per channel.
                for j in range(min(width, k_out - k0)):
                    add = bias[k0 + j] if has_bias else zero
                    run = planes[n, k0 + j, p0 * out_w + t0:p0 * out_w + t0 + count]
                    for r in range(count):
                        value = done[r, j] + add
                        if relu and value < zero:
                            value = zero
                        run[r] = value


def _geometry(out_h, out_w, kh, kw, stride, dilation):
    """(band, pitch, block_rows) of a forward product's work items: a band of output rows of at least
    _ITEM_POSITIONS outputs (or the whole image), and the block those rows read."""
    band = max(1, min(out_h, -(-_ITEM_POSITIONS // out_w)))
    pitch = (out_w - 1) * stride[1] + (kw - 1) * dilation[1] + 1
    block_rows = (band - 1) * stride[0] + (kh - 1) * dilation[0] + 1
    return band, pitch, block_rows


def _plan(weight_shape, out_shape, stride, dilation, precision, finite):
    """(plan, the fraction of its multiply-adds that are kept, counting Winograd's as 2.25) of forward_plan."""
    k_out, _, kh, kw = weight_shape
    out_h, out_w = out_shape[2:]
    band, pitch, _ = _geometry(out_h, out_w, kh, kw, stride, dilation)
    span = band * pitch
    rows_kept = k_out / _round_up(k_out, WIDE[0]) * out_w / pitch * span / _round_up(span, WIDE[1])
    pixels_kept = k_out / _round_up(k_out, SQUARE[1]) * band * out_w / _round_up(band * out_w, SQUARE[0])
    best = ("rows", rows_kept) if tuple(stride) == (1, 1) and rows_kept > pixels_kept else ("pixels", pixels_kept)
    if winograd.applies(weight_shape, stride, dilation, precision):
        transformed = winograd.SAVING * winograd.kept(out_h, out_w)
        if transformed > best[1] and finite():
            return "winograd", transformed
    return best


def forward_plan(weight_shape, out_shape, stride, dilation, precision, finite=lambda: True) -> str:
    """How _correlate computes a product: "winograd", "rows" or "pixels".

    The one that drops the least work, counting Winograd's 2.25x fewer multiplications: rows
    (stride 1) keep K/ceil4(K) of the channels, Q/pitch of each row and the band rounded up to
    64; pixels K/ceil16(K) and the band's pixels rounded to 16; Winograd (where it applies and
    ``finite()`` says the inputs are) its band's tiles rounded up to 64, which rules it out for small
    images.  finite is asked last: it reads the inputs.
    """
    return _plan(weight_shape, out_shape, stride, dilation, precision, finite)[0]


def _correlate(src, mask, mask_relu, weight, bias, relu, y, stride, pad, up, dilation, plan):
    """y = act(correlate(V, weight) + bias) for the virtual input V of src (see blocks.fill_block), y preallocated.

    The forward pass (up = 1) and the data gradient (stride 1, up = the forward stride), as ``plan`` says.
    """
    if plan == "winograd":
        winograd.correlate(src, mask, mask_relu, weight, bias, relu, y, pad)
        return
    k_out, channels, kh, kw = weight.shape
    out_h, out_w = y.shape[2:]
    band, pitch, block_rows = _geometry(out_h, out_w, kh, kw, stride, dilation)
    taps = taps_of(channels, kh, kw, block_rows * pitch, pitch, dilation[0], dilation[1])
    has_bias = bias is not None
    bias = bias if has_bias else np.zeros(1, y.dtype)  # numba needs an array either way
    serial = y.size * channels * kh * kw < SERIAL_MACS
    if plan == "rows":
        launch(_forward_rows, serial, src, mask, mask_relu, weight.reshape(-1), taps, bias, has_bias, relu, y,
               pad[0], pad[1], up[0], up[1], band, pitch, block_rows)
    else:
        k_pad = _round_up(k_out, SQUARE[1])
        weights_t = np.zeros((channels * kh * kw, k_pad), y.dtype)
        weights_t[:, :k_out] = weight.reshape(k_out, -1).T
        launch(_forward_pixels, serial, src, mask, mask_relu, weights_t.reshape(-1), k_pad, taps, bias, has_bias,
               relu, y, stride[0], stride[1], pad[0], pad[1], up[0], up[1], band, pitch, block_rows)


# ----------------------------------------------------------------------------
# the data gradient by folding
# ----------------------------------------------------------------------------


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _fold(grad_y, mask, relu, weights, images_per_item, grad_x, stride_h, stride_w, pad_h, pad_w,
          dil_h, dil_w, kh, kw):
    """grad_x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] += sum over k of weights[k, (c, r, s)] * g[n, k, p, q].

    g = grad_y masked by mask > 0 if relu.  Work item: images_per_item images, whose masked
    grad_y is first laid out (K, their pixels) so that the pixels of several small images fill a
    tile's 64 columns.  For 4 taps at a time: tiles of 4 taps x 64 pixels reduced over K into
    ``cols`` (the 4 taps' rows of the unfolded gradient, all the item's pixels), then each row
    added back onto grad_x one output row at a time (a contiguous run at stride 1).  Taps in
    order, pixels in order: every element of grad_x adds its terms in one fixed order.
    """
    n_images, channels, height, width = grad_x.shape
    k_out, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    pixels = out_h * out_w
    n_taps = channels * kh * kw
    tile_rows, tile_width = WIDE
    items = (n_images + images_per_item - 1) // images_per_item
    steps = (np.arange(k_out) * n_taps).astype(np.uint64)
    zero = grad_x.dtype.type(0)
    for item in prange(items):
        first = item * images_per_item
        count = min(images_per_item, n_images - first)
        span = count * pixels
        pitch = (span + tile_width - 1) // tile_width * tile_width
        g = np.zeros(k_out * pitch, grad_x.dtype)
        for i in range(count):
            g3 = grad_y[first + i].reshape(k_out, pixels)
            m3 = mask[first + i].reshape(k_out, pixels)
            for k in range(k_out):
                dst = g[k * pitch + i * pixels:k * pitch + (i + 1) * pixels]
                for t in range(pixels):
                    value = g3[k, t]
                    if relu and not m3[k, t] > zero:
                        value = zero
                    dst[t] = value
        g_steps = np.arange(k_out) * pitch
        grad_x[first:first + count] = zero
        tile = stack_tile(tile_rows, tile_width, grad_x.dtype)
        cols = np.empty((tile_rows, pitch), grad_x.dtype)
        a_row = stack_offsets(tile_rows)
        for t0 in range(0, n_taps, tile_rows):
            for r in range(tile_rows):
                a_row[r] = np.uint64(min(t0 + r, n_taps - 1))  # taps past the last: computed, dropped
            for j0 in range(0, span, tile_width):
                clear(tile)
                accumulate(tile, weights, a_row, steps, g, g_steps, j0, 0, k_out)
                spill(tile, cols[:, j0:j0 + tile_width])
            for r in range(min(tile_rows, n_taps - t0)):
                tap = t0 + r
                c = tap // (kh * kw)
                rr = (tap // kw) % kh
                w0 = (tap % kw) * dil_w - pad_w  # the input column of output column 0
                q_lo = 0 if w0 >= 0 else (-w0 + stride_w - 1) // stride_w
                q_hi = min(out_w, (width - 1 - w0) // stride_w + 1) if width - 1 - w0 >= 0 else 0
                for i in range(count):
                    for p in range(out_h):
                        h = p * stride_h - pad_h + rr * dil_h
                        if h < 0 or h >= height:
                            continue
                        row = grad_x[first + i, c, h]
                        source = cols[r, i * pixels + p * out_w:(i * pixels) + (p + 1) * out_w]
                        if stride_w == 1:
                            dst = row[w0 + q_lo:w0 + q_hi]
                            src = source[q_lo:q_hi]
                            for q in range(q_hi - q_lo):
                                dst[q] += src[q]
                        else:
                            for q in range(q_lo, q_hi):
                                row[w0 + q * stride_w] += source[q]


def _fold_gradient(grad_y, mask, relu, weight, stride, padding, dilation, grad_x):
    """grad_x (preallocated) by _fold."""
    k_out, _, kh, kw = weight.shape
    pixels = grad_y.shape[2] * grad_y.shape[3]
    serial = grad_y.size * weight[0].size < SERIAL_MACS
    launch(_fold, serial, grad_y, mask, relu, weight.reshape(-1), _fold_images(pixels), grad_x,
           *stride, *padding, *dilation, kh, kw)


# ----------------------------------------------------------------------------
# the weight gradient
# ----------------------------------------------------------------------------


@njit(parallel=True, cache=True, fastmath=FASTMATH, boundscheck=False)
def _weight_grad(grad_y, mask, relu, x, taps, k_pad, images_per_item, partial_w, partial_b,
                 stride_h, stride_w, pad_h, pad_w, pitch, block_rows):
    """partial_w[item, t*k_pad + k] = sum over the item's images and pixels of block[t + base(p, q)] * g[n, k, p, q];
    partial_b[item, k] = the sum of g[n, k] (in float64), g = grad_y masked by mask > 0 if relu.

    Tiles: 16 taps x 16 output channels, reduced over _PIXEL_CHUNK pixels at a time,
    for which g is transposed to (pixel, channel) so that a tile's channels are one vector.
    """
    n_images, channels = x.shape[0], x.shape[1]
    k_out, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    n_taps = taps.size
    pixels = out_h * out_w
    tile_rows, width = SQUARE
    plane = block_rows * pitch
    items = partial_w.shape[0]
    zero = x.dtype.type(0)
    steps = np.arange(_PIXEL_CHUNK) * k_pad
    taps_u = taps.astype(np.uint64)
    for item in prange(items):
        acc = partial_w[item]
        acc[:] = 0
        acc_b = partial_b[item]
        acc_b[:] = 0
        block = np.empty(channels * plane, x.dtype)
        g_t = np.zeros(_PIXEL_CHUNK * k_pad, x.dtype)
        bases = np.empty(_PIXEL_CHUNK, np.uint64)
        a_row = stack_offsets(tile_rows)
        tile = stack_tile(tile_rows, width, x.dtype)
        for n in range(item * images_per_item, min(n_images, (item + 1) * images_per_item)):
            fill_block(block, x, x, False, n, 0, block_rows, pitch, pad_h, pad_w, 1, 1)
            g3 = grad_y[n].reshape(k_out, pixels)
            m3 = mask[n].reshape(k_out, pixels)
            for t0 in range(0, pixels, _PIXEL_CHUNK):
                count = min(_PIXEL_CHUNK, pixels - t0)
                for i in range(count):
                    t = t0 + i
                    p = t // out_w
                    bases[i] = np.uint64(p * stride_h * pitch + (t - p * out_w) * stride_w)
                for k in range(k_out):
                    src = g3[k, t0:t0 + count]
                    keep = m3[k, t0:t0 + count]
                    total = 0.0
                    for i in range(count):
                        value = src[i]
                        if relu and not keep[i] > zero:
                            value = zero
                        g_t[i * k_pad + k] = value
                        total += value
                    acc_b[k] += total
                for t_first in range(0, n_taps, tile_rows):
                    for r in range(tile_rows):
                        a_row[r] = taps_u[min(t_first + r, n_taps - 1)]  # past the last tap: dropped at the end
                    for k0 in range(0, k_pad, width):
                        # The partial sums have a row for every tile row (taps rounded up), so whole
                        # tiles add in: indexing the tile by a computed bound would keep it in memory.
                        clear(tile)
                        accumulate(tile, block, a_row, bases, g_t, steps, k0, 0, count)
                        for r in range(tile_rows):
                            for j in range(width):
                                acc[(t_first + r) * k_pad + k0 + j] += tile[r, j]


def _weight_gradient(grad_y, mask, relu, x, weight_shape, stride, padding, dilation):
    """(grad_w (K, C, R, S), grad_b (K,)), both in x's dtype."""
    n_images, channels = x.shape[:2]
    k_out, _, kh, kw = weight_shape
    out_h, out_w = grad_y.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    pitch = (out_w - 1) * sw + (kw - 1) * dw + 1
    block_rows = (out_h - 1) * sh + (kh - 1) * dh + 1
    taps = taps_of(channels, kh, kw, block_rows * pitch, pitch, dh, dw)
    k_pad = _round_up(k_out, SQUARE[1])
    items = min(n_images, _MAX_WEIGHT_ITEMS)
    images_per_item = -(-n_images // items)
    items = -(-n_images // images_per_item)
    partial_w = np.empty((items, _round_up(taps.size, SQUARE[0]) * k_pad), x.dtype)
    partial_b = np.empty((items, k_out), np.float64)
    launch(_weight_grad, grad_y.size * taps.size < SERIAL_MACS, grad_y, mask, relu, x, taps, k_pad, images_per_item,
           partial_w, partial_b, sh, sw, ph, pw, pitch, block_rows)
    grad_w_t = partial_w.sum(axis=0, dtype=np.float64).reshape(-1, k_pad)[:taps.size, :k_out]
    grad_w = np.ascontiguousarray(grad_w_t.T, dtype=x.dtype).reshape(weight_shape)
    return grad_w, partial_b.sum(axis=0).astype(x.dtype)


# ----------------------------------------------------------------------------
# the public passes
# ----------------------------------------------------------------------------


def _all_finite(*arrays) -> bool:
    """No NaN or infinity in any of the arrays (one vectorized sum each; an overflowing
    sum of finite values answers False too, which only costs the faster path)."""
    return all(np.isfinite(a.sum()) for a in arrays)


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out):
    """y = act(conv(x, weight) + bias) into ``out`` (or a new (N, K, P, Q) array)."""
    n_images, _, height, width = x.shape
    k_out, _, kh, kw = weight.shape
    out_h = output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = output_size(width, kw, stride[1], padding[1], dilation[1])
    y = np.empty((n_images, k_out, out_h, out_w), dtype=x.dtype) if out is None else out
    x_op = round_operand(x, precision)
    w_op = round_operand(weight, precision)
    plan = forward_plan(weight.shape, y.shape, stride, dilation, precision, lambda: _all_finite(x, weight))
    _correlate(x_op, x_op, False, w_op, bias, activation == "relu", y, stride, padding, (1, 1), dilation, plan)
    return y


def _fold_images(pixels: int) -> int:
    """Images per fold work item: enough that their pixels fill the 64-wide tiles."""
    return max(1, -(-_FOLD_PIXELS // pixels))


def data_gradient_plan(weight_shape, x_shape, out_shape, stride, dilation, precision, finite=lambda: True) -> str:
    """How conv2d_backward computes grad_x: "fold", or the forward_plan of a product at stride 1.

    Either the forward machinery runs on grad_y, zero-inserted by the stride, with the filters
    flipped and transposed (C, K, R, S) -- the zeros waste stride_h * stride_w of it, and Winograd
    is not tried -- or "fold": each image's unfolded gradient W^T @ g, 4 taps x 64 pixels a
    tile, added back onto grad_x as it is made.  Fold keeps taps/ceil4(taps) and the items'
    pixels rounded to 64, less the adding back (about 4 multiply-adds' worth per tap and pixel,
    against the K that each of them took).
    """
    k_out, channels, kh, kw = weight_shape
    strided = tuple(stride) != (1, 1)
    plan, kept = _plan((channels, k_out, kh, kw), x_shape, (1, 1), dilation, precision,
                       lambda: not strided and finite())
    if plan == "winograd":
        return plan
    taps = channels * kh * kw
    pixels = out_shape[2] * out_shape[3]
    span = _fold_images(pixels) * pixels
    folded = taps / _round_up(taps, WIDE[0]) * span / _round_up(span, WIDE[1]) * k_out / (k_out + 4)
    return "fold" if folded > kept / (stride[0] * stride[1]) else plan


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    """(grad_x, grad_w, grad_b) of y = act(conv(x, weight) + bias); ``y`` supplies the ReLU mask."""
    relu = activation == "relu"
    mask = y if relu else grad_y  # read only when relu
    k_out, channels, kh, kw = weight.shape
    (ph, pw), (dh, dw) = padding, dilation
    gy_op = round_operand(grad_y, precision)
    x_op = round_operand(x, precision)
    # grad_x: grad_y, masked and zero-inserted by the stride, correlated with the flipped,
    # transposed filters; a padding past the filter's reach is negative, a crop.
    flipped = np.ascontiguousarray(round_operand(weight, precision)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    grad_x = np.empty_like(x)
    full_pad = ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    plan = data_gradient_plan(weight.shape, x.shape, grad_y.shape, stride, dilation, precision,
                              lambda: _all_finite(grad_y, weight))
    if plan == "fold":
        _fold_gradient(gy_op, mask, relu, round_operand(weight, precision), stride, padding, dilation, grad_x)
    else:
        _correlate(gy_op, mask, relu, flipped, None, False, grad_x, (1, 1), full_pad, stride, dilation, plan)
    grad_w, grad_b = _weight_gradient(gy_op, mask, relu, x_op, weight.shape, stride, padding, dilation)
    return grad_x, grad_w, grad_b


class Conv2dOps:
    """The CPU backend's convolutions (see dlgpu.backend.Backend)."""

    conv2d = staticmethod(conv2d)
    conv2d_backward = staticmethod(conv2d_backward)
