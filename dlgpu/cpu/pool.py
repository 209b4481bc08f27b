"""CPU max pooling with argmax: forward and backward.

    max_pool2d(x, kernel, stride, padding)           -> (y (N, C, P, Q), argmax int32)
    max_pool2d_backward(grad_y, argmax, input_shape, kernel, stride, padding) -> grad_x

argmax is h*W + w in the unpadded input plane.  Padding is never chosen
(padding <= kernel//2 guarantees every window a real element).  The first
valid element in row-major (kh, kw) order starts as best; a later one
replaces it if it is NaN or strictly greater; a NaN best stays.  So NaN
propagates and ties go to the first.

Both passes run one (image, channel) plane per parallel iteration; backward
scatters that plane's outputs in order into its own plane of grad_x, so
overlapping windows add up identically every call.  An argmax outside its own
window is skipped, as the GPU's gather kernel never sees it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlgpu.cpu.threads import SERIAL_ELEMENTS, launch
from dlgpu.window import output_size


@njit(parallel=True, cache=True)
def _max_pool(x, y, argmax, kh, kw, sh, sw, ph, pw):
    n_images, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for plane in prange(n_images * channels):
        n = plane // channels
        c = plane % channels
        image = x[n, c]
        for p in range(out_h):
            h0 = p * sh - ph
            h_lo, h_hi = max(h0, 0), min(h0 + kh, height)
            for q in range(out_w):
                w0 = q * sw - pw
                w_lo, w_hi = max(w0, 0), min(w0 + kw, width)
                best = image[h_lo, w_lo]
                best_at = h_lo * width + w_lo
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        v = image[h, w]
                        # best == best: a NaN best stays; v != v: a NaN replaces a number.
                        if best == best and (v > best or v != v):
                            best = v
                            best_at = h * width + w
                y[n, c, p, q] = best
                argmax[n, c, p, q] = best_at


@njit(parallel=True, cache=True)
def _max_pool_backward(grad_y, argmax, grad_x, kh, kw, sh, sw, ph, pw):
    n_images, channels, width = grad_x.shape[0], grad_x.shape[1], grad_x.shape[3]
    plane_size = grad_x.shape[2] * width
    out_h, out_w = grad_y.shape[2], grad_y.shape[3]
    zero = grad_x.dtype.type(0)
    gx = grad_x.reshape(n_images * channels, plane_size)
    gy = grad_y.reshape(n_images * channels, out_h * out_w)
    am = argmax.reshape(n_images * channels, out_h * out_w)
    for plane in prange(n_images * channels):
        dst = gx[plane]
        dst[:] = zero
        for p in range(out_h):
            h0 = p * sh - ph
            for q in range(out_w):
                i = p * out_w + q
                at = am[plane, i]
                h = at // width
                w = at - h * width
                w0 = q * sw - pw
                # Only a position inside this output's window, as the GPU's gather kernel reads it.
                if h0 <= h < h0 + kh and w0 <= w < w0 + kw:
                    dst[at] += gy[plane, i]


def max_pool2d(x, kernel, stride, padding):
    n_images, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h = output_size(height, kh, sh, ph)
    out_w = output_size(width, kw, sw, pw)
    y = np.empty((n_images, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_images, channels, out_h, out_w), dtype=np.int32)
    launch(_max_pool, y.size * kh * kw < SERIAL_ELEMENTS, x, y, argmax, kh, kw, sh, sw, ph, pw)
    return y, argmax


def max_pool2d_backward(grad_y, argmax, input_shape, kernel, stride, padding):
    grad_x = np.empty(tuple(input_shape), dtype=grad_y.dtype)
    launch(_max_pool_backward, grad_x.size < SERIAL_ELEMENTS, grad_y, argmax, grad_x, *kernel, *stride, *padding)
    return grad_x


class PoolOps:
    """The CPU backend's pooling (see dlgpu.backend.Backend)."""

    max_pool2d = staticmethod(max_pool2d)
    max_pool2d_backward = staticmethod(max_pool2d_backward)
