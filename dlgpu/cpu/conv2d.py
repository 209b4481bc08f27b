"""CPU 2-D convolution (NCHW x, OIHW weight): forward, backward-data, backward-weights.

    conv2d(x, w, bias, stride, padding, dilation, act, precision, out)        -> y (N, K, P, Q)
    conv2d_backward(gy, x, w, y, stride, padding, dilation, act, precision)   -> (gx, gw, gb)

Two strategies, both "transform with numba, multiply with NumPy's BLAS":

im2col (any geometry).  A chunk of nb images is unfolded by a numba kernel
(one (image, channel) plane per parallel iteration) into a reusable buffer
cols (C*R*S, nb*P*Q), so the whole chunk is ONE product W (K, C*R*S) @
cols; a second pass scatters it into y with the bias and ReLU.  Backward
gathers the ReLU-masked grad_y into the same wide layout (summing grad_b
on the way), then grad_w += gy @ cols.T and the buffer takes W.T @ gy (the
unfolded input's gradient), which col2im folds back one plane per
parallel iteration.  Why one wide product rather than one per image: BLAS
runs small products (LeNet's 6 x 25 x 576) far below its peak, and every
call wakes and joins its threads, which on a busy 2-core machine costs
more than the arithmetic.  Why not direct loops: sgemm runs the products
several times faster than any loop nest numba emits, and for tiny layers
the unfold is the whole cost anyway, a copy with the padding test hoisted
out of the inner loop.

Winograd F(2x2, 3x3) (3x3 filters, stride 1, no dilation, K <= 4C,
"ieee").  The ResNet-style layer that dominates real networks does
2.25x fewer multiplications this way, and its transformed input (16 values
per 2x2 outputs and channel) is less than half the size of im2col's 9 per
output, so both the products and the memory traffic shrink; see the
section below for the algebra.

Every parallel loop runs over independent planes (or channels) and adds
in a fixed order, so every result is the same bits on every call.  The ReLU
mask is applied to grad_y in the same pass that sums grad_b.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

from dlgpu.cpu.gemm import round_operand
from dlgpu.window import output_size

# Bytes of unfolded (or Winograd-transformed) data per chunk of images: large
# enough that the stacked GEMMs see whole images, small enough that a ResNet
# layer never allocates hundreds of megabytes; at least one image always.
_WORKSPACE_BYTES = 16 << 20

# Winograd is used while output channels <= this many times input channels.
_WINOGRAD_MAX_FAN_OUT = 4


@njit(cache=True)
def _valid_range(out_size, in_size, offset, stride):
    """[lo, hi): the outputs o whose input index o*stride + offset lies in [0, in_size)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (in_size - 1 - offset) // stride + 1 if in_size - 1 - offset >= 0 else 0
    return lo, max(lo, min(hi, out_size))


@njit(parallel=True, cache=True)
def _im2col(x, first, nb, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """cols[(c, r, s), n*P*Q + p*Q + q] = x[first + n, c, p*sh - ph + r*dh, q*sw - pw + s*dw], 0 outside."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    pq = out_h * out_w
    zero = cols.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = x[first + n, c]
        for r in range(kh):
            p_lo, p_hi = _valid_range(out_h, height, r * dh - ph, sh)
            for s in range(kw):
                q_lo, q_hi = _valid_range(out_w, width, s * dw - pw, sw)
                row = cols[(c * kh + r) * kw + s, n * pq:(n + 1) * pq]
                for p in range(out_h):
                    dst = row[p * out_w:(p + 1) * out_w]
                    if p < p_lo or p >= p_hi:
                        dst[:] = zero
                        continue
                    src = image[p * sh - ph + r * dh]
                    dst[:q_lo] = zero
                    base = s * dw - pw
                    if sw == 1:  # the common case: a contiguous copy the compiler vectorizes
                        dst[q_lo:q_hi] = src[q_lo + base:q_hi + base]
                    else:
                        for q in range(q_lo, q_hi):
                            dst[q] = src[q * sw + base]
                    dst[q_hi:] = zero


@njit(parallel=True, cache=True)
def _col2im(cols, first, nb, grad_x, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """grad_x[first + n, c] = sum over (r, s, p, q) of cols[(c, r, s), n*P*Q + p*Q + q] at its input pixel.

    One (image, channel) plane per iteration, outputs in a fixed order: no races, same bits.
    """
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    pq = out_h * out_w
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
                row = cols[(c * kh + r) * kw + s, n * pq:(n + 1) * pq]
                base = s * dw - pw
                for p in range(p_lo, p_hi):
                    dst = image[p * sh - ph + r * dh]
                    src = row[p * out_w:(p + 1) * out_w]
                    if sw == 1:
                        dst[q_lo + base:q_hi + base] += src[q_lo:q_hi]
                    else:
                        for q in range(q_lo, q_hi):
                            dst[q * sw + base] += src[q]


@njit(parallel=True, cache=True)
def _scatter_bias_act(y_wide, first, nb, y, bias, has_bias, relu):
    """y[first + n, k] = act(y_wide[k, n*P*Q : (n+1)*P*Q] + bias[k]); (image, channel) planes in parallel."""
    channels = y.shape[1]
    pq = y.shape[2] * y.shape[3]
    zero = y.dtype.type(0)
    out = y.reshape(y.shape[0], channels, pq)
    for plane in prange(nb * channels):
        n = plane // channels
        k = plane % channels
        src = y_wide[k, n * pq:(n + 1) * pq]
        dst = out[first + n, k]
        b = bias[k] if has_bias else zero
        for i in range(pq):
            v = src[i] + b
            if relu and v < zero:
                v = zero  # NaN propagates, as np.maximum(v, 0) does
            dst[i] = v


@njit(parallel=True, cache=True)
def _gather_masked(grad_y, y, relu, first, nb, gy_wide, channel_sum):
    """gy_wide[k, n*P*Q + i] = grad_y[first + n, k, i] * (y > 0 if relu); channel_sum[k] += their sum.

    Parallel over channels; each adds its images and pixels in order, in float64.
    """
    channels = grad_y.shape[1]
    pq = grad_y.shape[2] * grad_y.shape[3]
    zero = grad_y.dtype.type(0)
    g3 = grad_y.reshape(grad_y.shape[0], channels, pq)
    y3 = y.reshape(y.shape[0], channels, pq)
    for k in prange(channels):
        acc = 0.0
        for n in range(nb):
            src = g3[first + n, k]
            mask = y3[first + n, k]
            dst = gy_wide[k, n * pq:(n + 1) * pq]
            for i in range(pq):
                g = src[i]
                if relu and not mask[i] > zero:
                    g = zero
                dst[i] = g
                acc += g
        channel_sum[k] += acc


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
# rounds the operands of the product the GPU actually runs.  So do inputs
# holding NaN or +-inf: the transforms mix a tile's pixels (inf - inf = NaN),
# so they would spread specials to outputs a direct convolution keeps finite
# or infinite.

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


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
    """y[first+n, k] tile = A^T m[:, k, t] A (+ bias, ReLU), only the outputs that exist.

    Row-at-a-time: A^T combines the 16 entries of a row of tiles into two rows
    of four (contiguous loops over the tiles), then A^T along each row.
    """
    channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles = tiles_h * tiles_w
    zero = y.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        k = plane % channels
        out = y[first + n, k]
        b = bias[k] if has_bias else zero
        s = np.empty((2, 4, tiles_w), dtype=y.dtype)
        for th in range(tiles_h):
            t0 = n * tiles + th * tiles_w
            for j in range(4):
                m0 = m[j, k, t0:t0 + tiles_w]
                m1 = m[4 + j, k, t0:t0 + tiles_w]
                m2 = m[8 + j, k, t0:t0 + tiles_w]
                m3 = m[12 + j, k, t0:t0 + tiles_w]
                for tw in range(tiles_w):
                    s[0, j, tw] = m0[tw] + m1[tw] + m2[tw]
                    s[1, j, tw] = m1[tw] - m2[tw] - m3[tw]
            for i in range(2):
                p = 2 * th + i
                if p >= out_h:
                    break
                row = out[p]
                si = s[i]
                for tw in range(tiles_w):
                    q = 2 * tw
                    left = si[0, tw] + si[1, tw] + si[2, tw] + b
                    if relu and left < zero:
                        left = zero  # NaN propagates, as np.maximum(v, 0) does
                    row[q] = left
                    if q + 1 < out_w:
                        right = si[1, tw] - si[2, tw] - si[3, tw] + b
                        if relu and right < zero:
                            right = zero
                        row[q + 1] = right


@njit(parallel=True, cache=True)
def _winograd_grad_output(grad_y, y, relu, first, nb, yh, plane_sum, tiles_h, tiles_w):
    """yh[e, k, t] = (A g A^T)[e] for the 2x2 block g of grad_y[first+n, k] at tile t (zero outside),
    with g masked by y > 0 if relu; plane_sum[first+n, k] = the sum of the masked plane, in float64.

    Row-at-a-time like _winograd_input: A combines the block's two rows into four
    (contiguous loops over a zero-padded row pair), then A along each row.
    """
    channels, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    tiles = tiles_h * tiles_w
    span = 2 * tiles_w
    zero = grad_y.dtype.type(0)
    for plane in prange(nb * channels):
        n = plane // channels
        k = plane % channels
        gy = grad_y[first + n, k]
        mask = y[first + n, k]
        g = np.zeros((2, span), dtype=grad_y.dtype)
        s = np.empty((4, span), dtype=grad_y.dtype)
        acc = 0.0
        for th in range(tiles_h):
            for i in range(2):
                p = 2 * th + i
                if p >= out_h:
                    g[i, :] = zero
                    continue
                for q in range(out_w):
                    value = gy[p, q]
                    if relu and not mask[p, q] > zero:
                        value = zero
                    g[i, q] = value
                    acc += value
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
        plane_sum[first + n, k] = acc


@njit(parallel=True, cache=True)
def _winograd_grad_input(dv, first, nb, grad_x, tiles_h, tiles_w, ph, pw):
    """grad_x[first+n, c] = sum over tiles of B dv[:, c, t] B^T, added at the tile's input pixels.

    Row-at-a-time: B combines the 16 entries of a row of tiles into four rows
    of four, B along each row is added into a zero-padded line (neighbouring
    tiles overlap by two columns), and each line is added onto its image row.
    One (image, channel) plane per iteration, tiles in order: the same bits every call.
    """
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    tiles = tiles_h * tiles_w
    span = 2 * tiles_w + 2
    w_lo = min(pw, span)  # line columns [w_lo, w_hi) are image columns [0, w_hi - w_lo)
    w_hi = max(w_lo, min(span, width + pw))
    for plane in prange(nb * channels):
        n = plane // channels
        c = plane % channels
        image = grad_x[first + n, c]
        image[:, :] = 0
        rows = np.empty((4, 4, tiles_w), dtype=grad_x.dtype)
        line = np.empty(span, dtype=grad_x.dtype)
        for th in range(tiles_h):
            t0 = n * tiles + th * tiles_w
            for j in range(4):
                d0 = dv[j, c, t0:t0 + tiles_w]
                d1 = dv[4 + j, c, t0:t0 + tiles_w]
                d2 = dv[8 + j, c, t0:t0 + tiles_w]
                d3 = dv[12 + j, c, t0:t0 + tiles_w]
                for tw in range(tiles_w):
                    rows[0, j, tw] = d0[tw]
                    rows[1, j, tw] = d1[tw] - d2[tw] + d3[tw]
                    rows[2, j, tw] = d1[tw] + d2[tw] - d0[tw]
                    rows[3, j, tw] = -d3[tw]
            for i in range(4):
                h = 2 * th - ph + i
                if h < 0 or h >= height:
                    continue
                r = rows[i]
                line[:] = 0
                for tw in range(tiles_w):
                    u = 2 * tw
                    line[u] += r[0, tw]
                    line[u + 1] += r[1, tw] - r[2, tw] + r[3, tw]
                    line[u + 2] += r[1, tw] + r[2, tw] - r[0, tw]
                    line[u + 3] -= r[3, tw]
                dst = image[h]
                for u in range(w_lo, w_hi):
                    dst[u - w_lo] += line[u]


_workspace = threading.local()


def _scratch(slot: str, size: int, dtype) -> np.ndarray:
    """A flat buffer of ``size`` elements, kept per thread and reused from call to call.

    Fresh multi-megabyte arrays come back from the allocator as new pages, and
    faulting them in costs as much as LeNet's whole unfold; keeping the few
    workspaces (each at most about _WORKSPACE_BYTES) avoids that.  Results never
    live in these buffers, and each caller uses its own slots.
    """
    buffers = _workspace.__dict__.setdefault("buffers", {})
    key = (slot, np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype)
    return buffer[:size]


def _chunk_images(n_images: int, bytes_per_image: int) -> int:
    return max(1, min(n_images, _WORKSPACE_BYTES // max(1, bytes_per_image)))


def _winograd_applies(weight_shape, stride, dilation, precision) -> bool:
    """3x3, stride 1, no dilation, exact arithmetic, and not many more outputs than inputs.

    im2col's unfold grows with C alone; Winograd transforms input and output,
    C + K.  Measured on 3x3 layers (2..64 channels), Winograd is faster up to
    K = 4C and slower beyond (a 3 -> 64 first layer: 6.2 ms against 3.4 ms).
    """
    k_out, channels, kh, kw = weight_shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and precision == "ieee"
        and k_out <= _WINOGRAD_MAX_FAN_OUT * channels
    )


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
    relu = activation == "relu"
    has_bias = bias is not None
    bias = bias if has_bias else np.zeros(1, dtype=x.dtype)  # numba needs an array either way
    if _winograd_applies(weight.shape, stride, dilation, precision) and _all_finite(x, weight):
        _winograd_forward(x, weight, bias, has_bias, relu, padding, y)
    else:
        _im2col_forward(x, weight, bias, has_bias, relu, stride, padding, dilation, precision, y)
    return y


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    """(grad_x, grad_w, grad_b) of y = act(conv(x, weight) + bias); ``y`` supplies the ReLU mask."""
    relu = activation == "relu"
    mask = y if relu else grad_y  # read only when relu
    if _winograd_applies(weight.shape, stride, dilation, precision) and _all_finite(grad_y, x, weight):
        return _winograd_backward(grad_y, mask, relu, x, weight, padding)
    return _im2col_backward(grad_y, mask, relu, x, weight, stride, padding, dilation, precision)


def _im2col_forward(x, weight, bias, has_bias, relu, stride, padding, dilation, precision, y):
    """Per chunk of images: unfold, one GEMM (K, C*R*S) @ (C*R*S, nb*P*Q), scatter with bias + ReLU."""
    n_images, channels = x.shape[:2]
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = y.shape[2:]
    crs, pq = channels * kh * kw, out_h * out_w
    x_op = round_operand(x, precision)
    w_mat = round_operand(weight, precision).reshape(k_out, crs)
    nb = _chunk_images(n_images, (crs + k_out) * pq * x.itemsize)
    cols_flat = _scratch("cols", crs * nb * pq, x.dtype)
    y_flat = _scratch("wide", k_out * nb * pq, x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        cols = cols_flat[: crs * count * pq].reshape(crs, count * pq)
        y_wide = y_flat[: k_out * count * pq].reshape(k_out, count * pq)
        _im2col(x_op, first, count, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        np.matmul(w_mat, cols, out=y_wide)
        _scatter_bias_act(y_wide, first, count, y, bias, has_bias, relu)


def _im2col_backward(grad_y, mask, relu, x, weight, stride, padding, dilation, precision):
    """(grad_x, grad_w, grad_b): per chunk, gather the masked grad_y wide, two GEMMs, fold back."""
    n_images, channels = x.shape[:2]
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = grad_y.shape[2:]
    crs, pq = channels * kh * kw, out_h * out_w
    x_op = round_operand(x, precision)
    w_mat = round_operand(weight, precision).reshape(k_out, crs)

    grad_x = np.empty_like(x)
    grad_w = np.zeros((k_out, crs), dtype=np.float64)
    grad_b = np.zeros(k_out, dtype=np.float64)
    nb = _chunk_images(n_images, (crs + k_out) * pq * x.itemsize)
    cols_flat = _scratch("cols", crs * nb * pq, x.dtype)
    gy_flat = _scratch("wide", k_out * nb * pq, x.dtype)
    partial_w_t = np.empty((crs, k_out), dtype=x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        cols = cols_flat[: crs * count * pq].reshape(crs, count * pq)
        gy_wide = gy_flat[: k_out * count * pq].reshape(k_out, count * pq)
        _gather_masked(grad_y, mask, relu, first, count, gy_wide, grad_b)
        gy_op = round_operand(gy_wide, precision)
        _im2col(x_op, first, count, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        # grad_w.T = cols @ gy.T: OpenBLAS runs this orientation about twice as fast
        # as gy @ cols.T for these short, very deep products (LeNet: 25 x 6 x 36864).
        np.matmul(cols, gy_op.T, out=partial_w_t)
        grad_w += partial_w_t.T
        # The unfolded input is spent: its buffer now takes the unfolded input's gradient.
        np.matmul(w_mat.T, gy_op, out=cols)
        _col2im(cols, first, count, grad_x, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
    return grad_x, grad_w.astype(x.dtype).reshape(weight.shape), grad_b.astype(x.dtype)


def _winograd_filter(weight):
    """(4, 4, K, C) = G g G^T for every (k, c) filter g, in float64 (a small array)."""
    k_out, channels = weight.shape[:2]
    u = _G @ weight.astype(np.float64).reshape(k_out * channels, 3, 3) @ _G.T
    return u.reshape(k_out, channels, 4, 4).transpose(2, 3, 0, 1)


def _winograd_workspace(n_images, channels, k_out, tiles, dtype):
    """Chunk size and flat buffers for the transformed input (16, C, T) and output (16, K, T)."""
    itemsize = np.dtype(dtype).itemsize
    nb = _chunk_images(n_images, 16 * (channels + k_out) * tiles * itemsize)
    return nb, _scratch("cols", 16 * channels * nb * tiles, dtype), _scratch("wide", 16 * k_out * nb * tiles, dtype)


def _winograd_forward(x, weight, bias, has_bias, relu, padding, y):
    n_images, channels = x.shape[:2]
    k_out = weight.shape[0]
    tiles_h, tiles_w = (y.shape[2] + 1) // 2, (y.shape[3] + 1) // 2
    tiles = tiles_h * tiles_w
    u = np.ascontiguousarray(_winograd_filter(weight).reshape(16, k_out, channels), dtype=x.dtype)
    nb, v_flat, m_flat = _winograd_workspace(n_images, channels, k_out, tiles, x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        v = v_flat[: 16 * channels * count * tiles].reshape(16, channels, count * tiles)
        m = m_flat[: 16 * k_out * count * tiles].reshape(16, k_out, count * tiles)
        _winograd_input(x, first, count, v, tiles_h, tiles_w, padding[0], padding[1])
        np.matmul(u, v, out=m)
        _winograd_output(m, first, count, y, bias, has_bias, relu, tiles_h, tiles_w)


def _winograd_backward(grad_y, mask, relu, x, weight, padding):
    n_images, channels = x.shape[:2]
    k_out = weight.shape[0]
    tiles_h, tiles_w = (grad_y.shape[2] + 1) // 2, (grad_y.shape[3] + 1) // 2
    tiles = tiles_h * tiles_w
    u_t = np.ascontiguousarray(_winograd_filter(weight).transpose(0, 1, 3, 2).reshape(16, channels, k_out), dtype=x.dtype)
    grad_x = np.empty_like(x)
    grad_u = np.zeros((16, k_out, channels), dtype=np.float64)
    partial_u = np.empty((16, k_out, channels), dtype=x.dtype)
    plane_sum = np.empty((n_images, k_out), dtype=np.float64)
    nb, v_flat, yh_flat = _winograd_workspace(n_images, channels, k_out, tiles, x.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        v = v_flat[: 16 * channels * count * tiles].reshape(16, channels, count * tiles)
        yh = yh_flat[: 16 * k_out * count * tiles].reshape(16, k_out, count * tiles)
        _winograd_input(x, first, count, v, tiles_h, tiles_w, padding[0], padding[1])
        _winograd_grad_output(grad_y, mask, relu, first, count, yh, plane_sum, tiles_h, tiles_w)
        np.matmul(yh, v.transpose(0, 2, 1), out=partial_u)
        grad_u += partial_u
        # The transformed input is spent: its buffer now takes its gradient.
        np.matmul(u_t, yh, out=v)
        _winograd_grad_input(v, first, count, grad_x, tiles_h, tiles_w, padding[0], padding[1])
    # grad_w = G^T dU G for every (k, c).
    grad_u = grad_u.reshape(4, 4, k_out * channels).transpose(2, 0, 1)
    grad_w = (_G.T @ grad_u @ _G).reshape(weight.shape)
    return grad_x, grad_w.astype(x.dtype), plane_sum.sum(axis=0).astype(x.dtype)


class Conv2dOps:
    """The CPU backend's convolutions (see dlgpu.backend.Backend)."""

    conv2d = staticmethod(conv2d)
    conv2d_backward = staticmethod(conv2d_backward)
