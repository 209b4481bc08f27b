"""CPU 2-D convolution (NCHW x, OIHW weight): forward, backward-data, backward-weights.

    conv2d(x, w, bias, stride, padding, dilation, act, precision, out)        -> y (N, K, P, Q)
    conv2d_backward(gy, x, w, y, stride, padding, dilation, act, precision)   -> (gx, gw, gb)

Strategy: per-image im2col into a reusable buffer, then NumPy's BLAS.
A chunk of images is unfolded by a numba kernel (one (image, channel) plane
per parallel iteration) into cols (nb, C*R*S, P*Q), and one stacked
np.matmul computes y[n] (K, P*Q) = W (K, C*R*S) @ cols[n] straight into the
output, so nothing is transposed afterwards.  Why this and not direct loops:
every layer we care about spends its time in the product, and sgemm runs
that at several times the speed of any loop nest numba emits; for a tiny
layer (LeNet's 1->6 channels) the unfold is the whole cost, and it is a
memory copy with the padding test hoisted out of the inner loop.  The
buffer is sized to stay near L2/L3 (_COLS_BYTES), not to hold the whole
batch, so a ResNet layer never allocates hundreds of megabytes.

Backward reuses the same buffer per chunk: unfold x, grad_w += gy[n] @
cols[n].T, then cols[n] = W.T @ gy[n] (the gradient of the unfolded input)
is folded back (col2im) one (image, channel) plane per parallel iteration,
so overlapping windows add up in a fixed order and the result is the same
bits every call.  The ReLU mask is applied to grad_y in the same pass that
sums grad_b.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.gemm import round_operand

# Bytes of unfolded input per chunk.  Large enough that the stacked GEMM sees
# whole images, small enough to stay cache-friendly; at least one image always.
_COLS_BYTES = 8 << 20


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


def _chunk_images(n_images: int, bytes_per_image: int) -> int:
    return max(1, min(n_images, _COLS_BYTES // max(1, bytes_per_image)))


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out):
    """y = act(conv(x, weight) + bias) into ``out`` (or a new (N, K, P, Q) array)."""
    n_images, channels, height, width = x.shape
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = _output_size(height, kh, sh, ph, dh)
    out_w = _output_size(width, kw, sw, pw, dw)
    y = np.empty((n_images, k_out, out_h, out_w), dtype=x.dtype) if out is None else out

    x_op = round_operand(x, precision)
    w_mat = round_operand(weight, precision).reshape(k_out, channels * kh * kw)
    crs, pq = channels * kh * kw, out_h * out_w
    y3 = y.reshape(n_images, k_out, pq)
    nb = _chunk_images(n_images, crs * pq * x_op.itemsize)
    cols_buffer = np.empty((nb, crs, pq), dtype=x_op.dtype)
    for first in range(0, n_images, nb):
        count = min(nb, n_images - first)
        cols = cols_buffer[:count]
        _im2col(x_op, first, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        np.matmul(w_mat, cols, out=y3[first:first + count])
    relu = activation == "relu"
    if bias is not None or relu:
        _bias_act_planes(y3, bias if bias is not None else y3[0, 0], bias is not None, relu)
    return y


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    """(grad_x, grad_w, grad_b) of y = act(conv(x, weight) + bias); ``y`` supplies the ReLU mask."""
    n_images, channels, height, width = x.shape
    k_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    crs, pq = channels * kh * kw, out_h * out_w
    relu = activation == "relu"

    gy3 = grad_y.reshape(n_images, k_out, pq)
    grad_b = np.empty(k_out, dtype=grad_y.dtype)
    if relu:
        masked = np.empty_like(gy3)
        _mask_and_channel_sum(gy3, y.reshape(gy3.shape), True, True, masked, grad_b)
    else:
        masked = gy3
        _mask_and_channel_sum(gy3, gy3, False, False, gy3, grad_b)
    masked = round_operand(masked, precision)
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
        gy_chunk = masked[first:first + count]
        _im2col(x_op, first, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
        np.matmul(gy_chunk, cols.transpose(0, 2, 1), out=partial_w[:count])
        grad_w += partial_w[:count].sum(axis=0, dtype=np.float64)
        # The unfolded input is spent: its buffer now takes the unfolded input's gradient.
        np.matmul(w_mat.T, gy_chunk, out=cols)
        _col2im(cols, first, grad_x, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw)
    return grad_x, grad_w.astype(x.dtype).reshape(weight.shape), grad_b
