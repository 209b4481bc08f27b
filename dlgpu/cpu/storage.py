"""16-bit storage on the CPU backend: float16 and bfloat16 arrays computed in float32.

Each op of a float16 or ``ml_dtypes.bfloat16`` call widens its 16-bit inputs
to float32 copies (exact), runs the float32 code of its stem's module (numba,
its tiled products) and rounds each output once to the inputs' dtype (round to
nearest even); float32 and float64 calls go straight to that code.  Products
and convolutions of widened 16-bit values run at "ieee": the values are
already 16-bit, so rounding them again to the storage precision would change
nothing, and the float32 arithmetic is what a tensor core does with them
(exact products, float32 sums).  Exceptions to "outputs in the inputs' dtype":
the softmax and squared-error losses are float32; a float32 ``out`` of matmul,
linear or conv2d (``out_dtype=np.float32``) receives the float32 result
unrounded; SGD with ``master`` (float32 master weights, float32 velocity)
updates the master copy and rounds it into the 16-bit param.
"""

from __future__ import annotations

import numpy as np

from dlgpu.cpu.conv2d import Conv2dOps
from dlgpu.cpu.elementwise import ElementwiseOps
from dlgpu.cpu.gemm import GemmOps
from dlgpu.cpu.mse import MseOps
from dlgpu.cpu.pool import PoolOps
from dlgpu.cpu.sgd import SgdOps
from dlgpu.cpu.softmax import SoftmaxOps
from dlgpu.precision import is_half

_FLOAT32 = np.dtype(np.float32)


class _Float32(GemmOps, Conv2dOps, ElementwiseOps, PoolOps, SoftmaxOps, MseOps, SgdOps):
    """The stems' own float32 / float64 code."""


def _half(array):
    """The 16-bit dtype of ``array``, or None (float32, float64: no conversion)."""
    dtype = np.dtype(array.dtype)
    return dtype if is_half(dtype) else None


def _wide(array):
    return None if array is None else array.astype(_FLOAT32)


def _narrow(result, dtype, out=None):
    """float32 ``result`` rounded to ``dtype``, into ``out`` when given (beyond float16's range: inf, as a
    kernel's conversion gives, without NumPy's warning)."""
    with np.errstate(over="ignore"):
        if out is None:
            return result.astype(dtype)
        out[...] = result
    return out


def _forward(method, dtype, out, *operands, rest=()):
    """A float32 op's single output, computed into a float32 ``out`` directly, else rounded into ``dtype``."""
    if out is not None and np.dtype(out.dtype) == _FLOAT32:
        return method(*map(_wide, operands), *rest, out)
    return _narrow(method(*map(_wide, operands), *rest, None), dtype, out)


# ---- elementwise


def _unary(name):
    method = getattr(_Float32, name)

    def op(x, out):
        dtype = _half(x)
        return method(x, out) if dtype is None else _narrow(method(_wide(x), None), dtype, out)

    return staticmethod(op)


def _binary(name):
    method = getattr(_Float32, name)

    def op(grad_y, y, out):
        dtype = _half(grad_y)
        return method(grad_y, y, out) if dtype is None else _narrow(method(_wide(grad_y), _wide(y), None), dtype, out)

    return staticmethod(op)


# ---- products and convolutions


def matmul(a, b, transpose_a, transpose_b, precision, out):
    dtype = _half(a)
    if dtype is None:
        return _Float32.matmul(a, b, transpose_a, transpose_b, precision, out)
    return _forward(lambda a32, b32, o: _Float32.matmul(a32, b32, transpose_a, transpose_b, "ieee", o), dtype, out,
                    a, b)


def linear(x, weight, bias, activation, precision, out):
    dtype = _half(x)
    if dtype is None:
        return _Float32.linear(x, weight, bias, activation, precision, out)
    return _forward(lambda x32, w32, b32, o: _Float32.linear(x32, w32, b32, activation, "ieee", o), dtype, out,
                    x, weight, bias)


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out):
    dtype = _half(x)
    if dtype is None:
        return _Float32.conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out)
    return _forward(lambda x32, w32, b32, o: _Float32.conv2d(x32, w32, b32, stride, padding, dilation, activation,
                                                             "ieee", o), dtype, out, x, weight, bias)


def _gradients(grads, dtype):
    return tuple(_narrow(g, dtype) for g in grads)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision):
    dtype = _half(a)
    if dtype is None:
        return _Float32.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision)
    return _gradients(_Float32.matmul_backward(_wide(grad_c), _wide(a), _wide(b), transpose_a, transpose_b, "ieee"),
                      dtype)


def linear_backward(grad_y, x, weight, y, activation, precision):
    dtype = _half(x)
    if dtype is None:
        return _Float32.linear_backward(grad_y, x, weight, y, activation, precision)
    return _gradients(_Float32.linear_backward(_wide(grad_y), _wide(x), _wide(weight), _wide(y), activation, "ieee"),
                      dtype)


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    dtype = _half(x)
    if dtype is None:
        return _Float32.conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision)
    grads = _Float32.conv2d_backward(_wide(grad_y), _wide(x), _wide(weight), _wide(y), stride, padding, dilation,
                                     activation, "ieee")
    return _gradients(grads, dtype)


# ---- pooling and the loss


def max_pool2d(x, kernel, stride, padding):
    dtype = _half(x)
    if dtype is None:
        return _Float32.max_pool2d(x, kernel, stride, padding)
    y, argmax = _Float32.max_pool2d(_wide(x), kernel, stride, padding)
    return _narrow(y, dtype), argmax  # exact: every y is an element of x


def max_pool2d_backward(grad_y, argmax, input_shape, kernel, stride, padding):
    dtype = _half(grad_y)
    if dtype is None:
        return _Float32.max_pool2d_backward(grad_y, argmax, input_shape, kernel, stride, padding)
    return _narrow(_Float32.max_pool2d_backward(_wide(grad_y), argmax, input_shape, kernel, stride, padding), dtype)


def softmax_cross_entropy(logits, labels):
    dtype = _half(logits)
    if dtype is None:
        return _Float32.softmax_cross_entropy(logits, labels)
    loss, probs = _Float32.softmax_cross_entropy(_wide(logits), labels)
    return loss, _narrow(probs, dtype)  # the loss stays float32


def softmax_cross_entropy_backward(probs, labels):
    dtype = _half(probs)
    if dtype is None:
        return _Float32.softmax_cross_entropy_backward(probs, labels)
    return _narrow(_Float32.softmax_cross_entropy_backward(_wide(probs), labels), dtype)


def mse_loss(y, t):
    dtype = _half(y)
    if dtype is None:
        return _Float32.mse_loss(y, t)
    return _Float32.mse_loss(_wide(y), _wide(t))  # the loss stays float32


# ---- the optimizer step


def sgd_step(param, grad, velocity, lr, momentum, weight_decay, master, grad_scale):
    """The step of dlgpu.backend.Backend.sgd_step; the weights stepped are ``master`` when given."""
    dtype = _half(param)
    if grad_scale != 1.0 or dtype is not None:
        grad = grad.astype(_FLOAT32) if dtype is not None else grad.copy()
        if grad_scale != 1.0:
            grad *= grad.dtype.type(1.0 / grad_scale)
    if master is not None:
        _Float32.sgd_step(master, grad, velocity, lr, momentum, weight_decay)
        param[...] = master  # rounded to param's dtype
    elif dtype is not None:
        param32, velocity32 = _wide(param), _wide(velocity)
        _Float32.sgd_step(param32, grad, velocity32, lr, momentum, weight_decay)
        param[...] = param32
        if velocity is not None and momentum != 0.0:
            velocity[...] = velocity32
    else:
        _Float32.sgd_step(param, grad, velocity, lr, momentum, weight_decay)


class StorageOps:
    """Every op of the CPU backend, on float32 and float64 arrays and on 16-bit storage."""

    relu = _unary("relu")
    tanh = _unary("tanh")
    sigmoid = _unary("sigmoid")
    relu_backward = _binary("relu_backward")
    tanh_backward = _binary("tanh_backward")
    sigmoid_backward = _binary("sigmoid_backward")
    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)
    conv2d = staticmethod(conv2d)
    conv2d_backward = staticmethod(conv2d_backward)
    max_pool2d = staticmethod(max_pool2d)
    max_pool2d_backward = staticmethod(max_pool2d_backward)
    softmax_cross_entropy = staticmethod(softmax_cross_entropy)
    softmax_cross_entropy_backward = staticmethod(softmax_cross_entropy_backward)
    mse_loss = staticmethod(mse_loss)
    # The gradient computes in float64 from the 16-bit values themselves and rounds once to their dtype.
    mse_loss_backward = staticmethod(MseOps.mse_loss_backward)
    sgd_step = staticmethod(sgd_step)
