"""CPU 2-D convolution (NCHW x, OIHW weight): forward, backward-data, backward-weights.

    conv2d(x, w, bias, stride, padding, dilation, act, precision, out)        -> y (N, K, P, Q)
    conv2d_backward(gy, x, w, y, stride, padding, dilation, act, precision)   -> (gx, gw, gb)

Two strategies, both "transform with numba, multiply with NumPy's BLAS":

im2col (any geometry).  A chunk of images is unfolded by a numba kernel (one
(image, channel) plane per parallel iteration) into a reusable buffer
cols (nb, C*R*S, P*Q), and one stacked np.matmul computes y[n] (K, P*Q) =
W (K, C*R*S) @ cols[n] straight into the output, so nothing is transposed
afterwards.  Backward unfolds x again, grad_w += gy[n] @ cols[n].T, then
the buffer takes W.T @ gy[n] (the unfolded input's gradient) and is folded
back (col2im) one plane per parallel iteration.  Why not direct loops:
sgemm runs the products several times faster than any loop nest numba
emits, and for tiny layers (LeNet's 1->6 channels) the unfold is the whole
cost anyway, a copy with the padding test hoisted out of the inner loop.

Winograd F(2x2, 3x3) (3x3 filters, stride 1, no dilation, >= 16 channels in
and out, "ieee").  The ResNet-style layer that dominates real networks does
2.25x fewer multiplications this way, and its transformed input (16 values
per 2x2 outputs and channel) is less than half the size of im2col's 9 per
output, so both the products and the memory traffic shrink; see the
section below for the algebra.

Everything parallel runs over independent (image, channel) planes and adds
in a fixed order, so every result is the same bits on every call.  The ReLU
mask is applied to grad_y in the same pass that sums grad_b.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.gemm import round_operand

# Bytes of unfolded (or Winograd-transformed) data per chunk of images: large
# enough that the stacked GEMMs see whole images, small enough that a ResNet
# layer never allocates hundreds of megabytes; at least one image always.
_WORKSPACE_BYTES = 16 << 20

# Below this many input or output channels the Winograd products are too small
# to pay for their transforms, and im2col is faster.
_WINOGRAD_MIN_CHANNELS = 16


def _output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@njit(cache=True)
def _valid_range(out_size, in_size, offset, stride):
    """[lo, hi): the outputs o whose input index o*stride + offset lies in [0, in_size)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (in_size - 1 - offset) // stride + 1 if in_size - 1 - offset >= 0 else 0
    return lo, max(lo, min(hi, out_size))


@njit(parallel=True, cache=True)
def _im2col(x, first, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """cols[n, (c, r, s), (p, q)] = x[first + n, c, p*sh - ph + r*dh, q*sw - pw + s*dw], 0 outside."""
    nb = cols.shape[0]
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    zero = cols.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = x[first + n, c]
        for r in range(kh):
            p_lo, p_hi = _valid_range(out_h, height, r * dh - ph, sh)
            for s in range(kw):
                q_lo, q_hi = _valid_range(out_w, width, s * dw - pw, sw)
                row = cols[n, (c * kh + r) * kw + s]
                for p in range(out_h):
                    dst = row[p * out_w:(p + 1) * out_w]
                    if p < p_lo or p >= p_hi:
                        dst[:] = zero
                        continue
                    src = image[p * sh - ph + r * dh]
                    for q in range(q_lo):
                        dst[q] = zero
                    base = s * dw - pw
                    for q in range(q_lo, q_hi):
                        dst[q] = src[q * sw + base]
                    for q in range(q_hi, out_w):
                        dst[q] = zero


@njit(parallel=True, cache=True)
def _col2im(cols, first, grad_x, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """grad_x[first + n, c] = sum over (r, s, p, q) of cols[n, (c, r, s), (p, q)] at its input pixel.

    One (image, channel) plane per iteration, outputs in a fixed order: no races, same bits.
    """
    nb = cols.shape[0]
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    zero = grad_x.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = grad_x[first + n, c]
        image[:, :] = zero
        for r in range(kh):
            p_lo, p_hi = _valid_range(out_h, height, r * dh - ph, sh)
            for s in range(kw):
                q_lo, q_hi = _valid_range(out_w, width, s * dw - pw, sw)
                row = cols[n, (c * kh + r) * kw + s]
                base = s * dw - pw
                for p in range(p_lo, p_hi):
                    dst = image[p * sh - ph + r * dh]
                    src = row[p * out_w:(p + 1) * out_w]
                    for q in range(q_lo, q_hi):
                        dst[q * sw + base] += src[q]


@njit(parallel=True, cache=True)
def _bias_act_planes(y, bias, has_bias, relu):
    """In place on y (N, K, PQ): y += bias[k] (if has_bias), then ReLU (if relu); planes in parallel."""
    n_images, channels, pq = y.shape
    zero = y.dtype.type(0)
    for plane in prange(n_images * channels):
        k = plane % channels
        row = y[plane // channels, k]
        b = bias[k] if has_bias else zero
        for i in range(pq):
            v = row[i] + b
            if relu and v < zero:
                v = zero  # NaN propagates, as np.maximum(v, 0) does
            row[i] = v


@njit(parallel=True, cache=True)
def _mask_and_channel_sum(grad_y, y, relu, write_masked, masked, channel_sum):
    """masked = grad_y * (y > 0) (if relu; written only if write_masked); channel_sum[k] = its sum.

    Parallel over channels; each sums its images and pixels in order, in float64.
    """
    n_images, channels, pq = grad_y.shape
    zero = grad_y.dtype.type(0)
    for k in prange(channels):
        acc = 0.0
        for n in range(n_images):
            g_row = grad_y[n, k]
            y_row = y[n, k]
            m_row = masked[n, k]
            for i in range(pq):
                g = g_row[i]
                if relu and not y_row[i] > zero:
                    g = zero
                if write_masked:
                    m_row[i] = g
                acc += g
        channel_sum[k] = acc



# ----------------------------------------------------------------------------
# Winograd F(2x2, 3x3): 3x3 filters, stride 1, no dilation
# ----------------------------------------------------------------------------
#
# Each 2x2 block of outputs is A^T [(G g G^T) * (B^T d B)] A for the 4x4 input
# tile d under it: 16 multiplies per (k, c) instead of 36.  Over all tiles
# that is 16 independent products M[e] (K, T) = U[e] (K, C) @ V[e] (C, T),
# one per tile entry e, which NumPy's BLAS runs stacked.  Backward uses the
# same transforms' adjoints: with Yh = A gy A^T per tile,
#   dU[e] = Yh[e] @ V[e].T  -> grad_w = G^T dU G
#   dV[e] = U[e].T @ Yh[e]  -> grad_x = B dV B^T, added back tile by tile.
# The transforms' coefficients are 0, +-1 and +-1/2, so fp32 loses well under
# the 5e-5 tolerance.  Tensor-core precisions keep im2col: their emulation
# rounds the operands of the product the GPU actually runs.

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


@njit(inline="always")
def _bt(d0, d1, d2, d3):
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def _b(v0, v1, v2, v3):
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@njit(inline="always")
def _at(m0, m1, m2, m3):
    return m0 + m1 + m2, m1 - m2 - m3


@njit(inline="always")
def _a(g0, g1):
    return g0, g0 + g1, g0 - g1, -g1


@njit(inline="always")
def _row4(image, h, w0, height, width):
    """image[h, w0:w0+4] as a 4-tuple, zero where it falls outside the image."""
    zero = image.dtype.type(0)
    if h < 0 or h >= height:
        return zero, zero, zero, zero
    if w0 >= 0 and w0 + 4 <= width:
        return image[h, w0], image[h, w0 + 1], image[h, w0 + 2], image[h, w0 + 3]
    row = image[h]
    return (
        row[w0] if 0 <= w0 < width else zero,
        row[w0 + 1] if 0 <= w0 + 1 < width else zero,
        row[w0 + 2] if 0 <= w0 + 2 < width else zero,
        row[w0 + 3] if 0 <= w0 + 3 < width else zero,
    )


@njit(inline="always")
def _store4(dst, e, ch, t, values):
    """dst[e:e+4, ch, t] = values."""
    dst[e, ch, t] = values[0]
    dst[e + 1, ch, t] = values[1]
    dst[e + 2, ch, t] = values[2]
    dst[e + 3, ch, t] = values[3]


@njit(inline="always")
def _load4(src, e, ch, t):
    return src[e, ch, t], src[e + 1, ch, t], src[e + 2, ch, t], src[e + 3, ch, t]


@njit(parallel=True, cache=True)
def _winograd_input(x, first, nb, v, tiles_h, tiles_w, ph, pw):
    """v[e, c, t] = (B^T d B)[e] for the 4x4 tile d of image first+n at tile t (zero outside x).

    Separable and row-at-a-time: for one row of tiles, B^T combines the four
    input rows into four zero-padded rows (contiguous loops), then B^T along
    each row writes the 16 entries as 16 contiguous runs of tiles_w values.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    tiles = tiles_h * tiles_w
    span = 2 * tiles_w + 2  # input columns -pw .. 2*tiles_w + 1 - pw that the tiles read
    w_lo = min(pw, span)  # the span columns [w_lo, w_hi) hold real pixels, the rest zeros
    w_hi = max(w_lo, min(span, width + pw))
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = x[first + n, c]
        d = np.zeros((4, span), dtype=x.dtype)
        e = np.empty((4, span), dtype=x.dtype)
        for th in range(tiles_h):
            h0 = 2 * th - ph
            for i in range(4):
                h = h0 + i
                if h < 0 or h >= height:
                    d[i, :] = 0
                else:
                    d[i, w_lo:w_hi] = image[h, : w_hi - w_lo]
            for u in range(span):
                e[0, u] = d[0, u] - d[2, u]
                e[1, u] = d[1, u] + d[2, u]
                e[2, u] = d[2, u] - d[1, u]
                e[3, u] = d[1, u] - d[3, u]
            t0 = n * tiles + th * tiles_w
            for a in range(4):
                row = e[a]
                for tw in range(tiles_w):
                    u = 2 * tw
                    v[4 * a, c, t0 + tw] = row[u] - row[u + 2]
                    v[4 * a + 1, c, t0 + tw] = row[u + 1] + row[u + 2]
                    v[4 * a + 2, c, t0 + tw] = row[u + 2] - row[u + 1]
                    v[4 * a + 3, c, t0 + tw] = row[u + 1] - row[u + 3]


@njit(parallel=True, cache=True)
def _winograd_output(m, first, nb, y, bias, has_bias, relu, tiles_h, tiles_w):
    """y[first+n, k] tile = A^T m[:, k, t] A (+ bias, ReLU), only the outputs that exist."""
    channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles = tiles_h * tiles_w
    zero = y.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        k = plane % channels
        out = y[first + n, k]
        b = bias[k] if has_bias else zero
        for th in range(tiles_h):
            for tw in range(tiles_w):
                t = n * tiles + th * tiles_w + tw
                m0 = _load4(m, 0, k, t)
                m1 = _load4(m, 4, k, t)
                m2 = _load4(m, 8, k, t)
                m3 = _load4(m, 12, k, t)
                top = _at(m0[0] + m1[0] + m2[0], m0[1] + m1[1] + m2[1], m0[2] + m1[2] + m2[2], m0[3] + m1[3] + m2[3])
                bottom = _at(m1[0] - m2[0] - m3[0], m1[1] - m2[1] - m3[1], m1[2] - m2[2] - m3[2], m1[3] - m2[3] - m3[3])
                for i in range(2):
                    p = 2 * th + i
                    if p >= out_h:
                        break
                    pair = top if i == 0 else bottom
                    for j in range(2):
                        q = 2 * tw + j
                        if q < out_w:
                            value = pair[j] + b
                            if relu and value < zero:
                                value = zero  # NaN propagates, as np.maximum(v, 0) does
                            out[p, q] = value


@njit(parallel=True, cache=True)
def _winograd_grad_output(grad_y, first, nb, yh, tiles_h, tiles_w):
    """yh[e, k, t] = (A gy A^T)[e] for the 2x2 block of grad_y[first+n, k] at tile t (zero outside).

    Row-at-a-time like _winograd_input: A combines the block's two rows into four
    (contiguous loops over a zero-padded row pair), then A along each row.
    """
    channels, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    tiles = tiles_h * tiles_w
    span = 2 * tiles_w
    for plane in prange(nb * channels):
        n = plane // channels
        k = plane % channels
        gy = grad_y[first + n, k]
        g = np.zeros((2, span), dtype=grad_y.dtype)
        s = np.empty((4, span), dtype=grad_y.dtype)
        for th in range(tiles_h):
            g[0, :out_w] = gy[2 * th]
            if 2 * th + 1 < out_h:
                g[1, :out_w] = gy[2 * th + 1]
            else:
                g[1, :] = 0
            for u in range(span):
                s[0, u] = g[0, u]
                s[1, u] = g[0, u] + g[1, u]
                s[2, u] = g[0, u] - g[1, u]
                s[3, u] = -g[1, u]
            t0 = n * tiles + th * tiles_w
            for a in range(4):
                row = s[a]
                for tw in range(tiles_w):
                    u = 2 * tw
                    yh[4 * a, k, t0 + tw] = row[u]
                    yh[4 * a + 1, k, t0 + tw] = row[u] + row[u + 1]
                    yh[4 * a + 2, k, t0 + tw] = row[u] - row[u + 1]
                    yh[4 * a + 3, k, t0 + tw] = -row[u + 1]


@njit(parallel=True, cache=True)
def _winograd_grad_input(dv, first, nb, grad_x, tiles_h, tiles_w, ph, pw):
    """grad_x[first+n, c] = sum over tiles of B dv[:, c, t] B^T, added at the tile's input pixels.

    One (image, channel) plane per iteration, tiles in order: the same bits every call.
    """
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    tiles = tiles_h * tiles_w
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = grad_x[first + n, c]
        image[:, :] = 0
        for th in range(tiles_h):
            h0 = 2 * th - ph
            for tw in range(tiles_w):
                w0 = 2 * tw - pw
                t = n * tiles + th * tiles_w + tw
                d0 = _load4(dv, 0, c, t)
                d1 = _load4(dv, 4, c, t)
                d2 = _load4(dv, 8, c, t)
                d3 = _load4(dv, 12, c, t)
                # B dv combines rows (d1 - d2 + d3, d1 + d2 - d0, ...); then B along each row.
                rows = (
                    _b(d0[0], d0[1], d0[2], d0[3]),
                    _b(d1[0] - d2[0] + d3[0], d1[1] - d2[1] + d3[1], d1[2] - d2[2] + d3[2], d1[3] - d2[3] + d3[3]),
                    _b(d1[0] + d2[0] - d0[0], d1[1] + d2[1] - d0[1], d1[2] + d2[2] - d0[2], d1[3] + d2[3] - d0[3]),
                    _b(-d3[0], -d3[1], -d3[2], -d3[3]),
                )
                interior = h0 >= 0 and w0 >= 0 and h0 + 4 <= height and w0 + 4 <= width
                for i in range(4):
                    h = h0 + i
                    if not interior and (h < 0 or h >= height):
                        continue
                    row = rows[i]
                    for j in range(4):
                        w = w0 + j
                        if interior or (w >= 0 and w < width):
                            image[h, w] += row[j]


def _chunk_images(n_images: int, bytes_per_image: int) -> int:
    return max(1, min(n_images, _WORKSPACE_BYTES // max(1, bytes_per_image)))


def _winograd_applies(weight_shape, stride, dilation, precision) -> bool:
    """3x3, stride 1, no dilation, exact arithmetic, and channels enough for the products to dominate."""
    k_out, channels, kh, kw = weight_shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and precision == "ieee"
        and min(channels, k_out) >= _WINOGRAD_MIN_CHANNELS
    )


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out):
    """y = act(conv(x, weight) + bias) into ``out`` (or a new (N, K, P, Q) array)."""
    n_images, _, height, width = x.shape
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = _output_size(height, kh, sh, ph, dh)
    out_w = _output_size(width, kw, sw, pw, dw)
    y = np.empty((n_images, k_out, out_h, out_w), dtype=x.dtype) if out is None else out
    relu = activation == "relu"
    has_bias = bias is not None
    if _winograd_applies(weight.shape, stride, dilation, precision):
        _winograd_forward(x, weight, bias if has_bias else y[0, 0, 0], has_bias, relu, (ph, pw), y)
        return y
    _im2col_forward(x, weight, stride, padding, dilation, precision, y)
    if has_bias or relu:
        y3 = y.reshape(n_images, k_out, out_h * out_w)
        _bias_act_planes(y3, bias if has_bias else y3[0, 0], has_bias, relu)
    return y


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    """(grad_x, grad_w, grad_b) of y = act(conv(x, weight) + bias); ``y`` supplies the ReLU mask."""
    n_images, k_out = grad_y.shape[:2]
    gy3 = grad_y.reshape(n_images, k_out, -1)
    grad_b = np.empty(k_out, dtype=grad_y.dtype)
    if activation == "relu":
        masked = np.empty_like(grad_y)
        _mask_and_channel_sum(gy3, y.reshape(gy3.shape), True, True, masked.reshape(gy3.shape), grad_b)
    else:
        masked = grad_y
        _mask_and_channel_sum(gy3, gy3, False, False, gy3, grad_b)
    if _winograd_applies(weight.shape, stride, dilation, precision):
        grad_x, grad_w = _winograd_backward(masked, x, weight, padding)
    else:
        grad_x, grad_w = _im2col_backward(masked, x, weight, stride, padding, dilation, precision)
    return grad_x, grad_w, grad_b


def _im2col_forward(x, weight, stride, padding, dilation, precision, y):
    """y (N, K, P, Q) = conv(x, weight), no bias: unfold a chunk of images, one stacked GEMM."""
    n_images, channels = x.shape[:2]
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = y.shape[2:]
    crs, pq = channels * kh * kw, out_h * out_w
    x_op = round_operand(x, precision)
    w_mat = round_operand(weight, precision).reshape(k_out, crs)
    y3 = y.reshape(n_images, k_out, pq)
    nb = _chunk_images(n_images, crs * pq * x_op.itemsize)
    cols_buffer = np.empty((nb, crs, pq), dtype=x_op.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        cols = cols_buffer[:count]
        _im2col(x_op, first, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        np.matmul(w_mat, cols, out=y3[first:first + count])


def _im2col_backward(masked, x, weight, stride, padding, dilation, precision):
    """(grad_x, grad_w) from the (already ReLU-masked) output gradient, by im2col and col2im."""
    n_images, channels = x.shape[:2]
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = masked.shape[2:]
    crs, pq = channels * kh * kw, out_h * out_w
    gy3 = round_operand(masked, precision).reshape(n_images, k_out, pq)
    x_op = round_operand(x, precision)
    w_mat = round_operand(weight, precision).reshape(k_out, crs)

    grad_x = np.empty_like(x)
    grad_w = np.zeros((k_out, crs), dtype=np.float64)
    nb = _chunk_images(n_images, crs * pq * x_op.itemsize)
    cols_buffer = np.empty((nb, crs, pq), dtype=x_op.dtype)
    partial_w = np.empty((nb, k_out, crs), dtype=x_op.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        cols = cols_buffer[:count]
        gy_chunk = gy3[first:first + count]
        _im2col(x_op, first, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        np.matmul(gy_chunk, cols.transpose(0, 2, 1), out=partial_w[:count])
        grad_w += partial_w[:count].sum(axis=0, dtype=np.float64)
        # The unfolded input is spent: its buffer now takes the unfolded input's gradient.
        np.matmul(w_mat.T, gy_chunk, out=cols)
        _col2im(cols, first, grad_x, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
    return grad_x, grad_w.astype(x.dtype).reshape(weight.shape)


def _winograd_workspace(n_images, channels, k_out, tiles, dtype):
    """Chunk size and flat buffers for the transformed input (16, C, T) and output (16, K, T)."""
    itemsize = np.dtype(dtype).itemsize
    nb = _chunk_images(n_images, 16 * (channels + k_out) * tiles * itemsize)
    return nb, np.empty(16 * channels * nb * tiles, dtype), np.empty(16 * k_out * nb * tiles, dtype)


def _winograd_forward(x, weight, bias, has_bias, relu, padding, y):
    n_images, channels = x.shape[:2]
    k_out = weight.shape[0]
    tiles_h, tiles_w = (y.shape[2] + 1) // 2, (y.shape[3] + 1) // 2
    tiles = tiles_h * tiles_w
    # The filter transform is tiny (16 K C values): float64 einsum, then one rounding.
    u = np.einsum("ir,kcrs,js->ijkc", _G, weight, _G).reshape(16, k_out, channels).astype(x.dtype)
    nb, v_flat, m_flat = _winograd_workspace(n_images, channels, k_out, tiles, x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        v = v_flat[: 16 * channels * count * tiles].reshape(16, channels, count * tiles)
        m = m_flat[: 16 * k_out * count * tiles].reshape(16, k_out, count * tiles)
        _winograd_input(x, first, count, v, tiles_h, tiles_w, padding[0], padding[1])
        np.matmul(u, v, out=m)
        _winograd_output(m, first, count, y, bias, has_bias, relu, tiles_h, tiles_w)


def _winograd_backward(masked, x, weight, padding):
    n_images, channels = x.shape[:2]
    k_out = weight.shape[0]
    tiles_h, tiles_w = (masked.shape[2] + 1) // 2, (masked.shape[3] + 1) // 2
    tiles = tiles_h * tiles_w
    u_t = np.einsum("ir,kcrs,js->ijck", _G, weight, _G).reshape(16, channels, k_out).astype(x.dtype)
    grad_x = np.empty_like(x)
    grad_u = np.zeros((16, k_out, channels), dtype=np.float64)
    partial_u = np.empty((16, k_out, channels), dtype=x.dtype)
    nb, v_flat, yh_flat = _winograd_workspace(n_images, channels, k_out, tiles, x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        v = v_flat[: 16 * channels * count * tiles].reshape(16, channels, count * tiles)
        yh = yh_flat[: 16 * k_out * count * tiles].reshape(16, k_out, count * tiles)
        _winograd_input(x, first, count, v, tiles_h, tiles_w, padding[0], padding[1])
        _winograd_grad_output(masked, first, count, yh, tiles_h, tiles_w)
        np.matmul(yh, v.transpose(0, 2, 1), out=partial_u)
        grad_u += partial_u
        # The transformed input is spent: its buffer now takes its gradient.
        np.matmul(u_t, yh, out=v)
        _winograd_grad_input(v, first, count, grad_x, tiles_h, tiles_w, padding[0], padding[1])
    grad_w = np.einsum("ir,ijkc,js->kcrs", _G, grad_u.reshape(4, 4, k_out, channels), _G)
    return grad_x, grad_w.astype(x.dtype)
