"""The CUDA backend: our kernels (kernels/*.cu), compiled by NVRTC and launched through CuPy.

dlgpu.functional picks this module for CuPy arrays and calls its functions with
arguments already validated and normalized (C-contiguous float32 arrays, pairs
for stride/padding, precision resolved).  Importing it needs neither CuPy nor a
GPU: the executor, which does, is made on the first launch.

Memory-bound ops run on our kernels; the matrix product, linear and convolution
kernels are not written yet and raise BackendUnavailableError.
"""

import numpy as np

from dlgpu.cuda import elementwise as _elementwise
from dlgpu.cuda import gemm as _gemm
from dlgpu.cuda import pool as _pool
from dlgpu.cuda import sgd as _sgd
from dlgpu.cuda import softmax as _softmax
from dlgpu.errors import BackendUnavailableError

FLOAT_DTYPES = (np.float32,)


def _not_yet(op: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"{op}: not implemented on the GPU yet (the CUDA backend has the memory-bound ops only); "
        "run it on NumPy arrays with the CPU backend"
    )


# ---------------------------------------------------------------- products and convolutions


def matmul(a, b, transpose_a, transpose_b, precision, out):
    return _gemm.matmul(a, b, transpose_a, transpose_b, precision, out)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision):
    return _gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision)


def linear(x, weight, bias, activation, precision, out):
    return _gemm.linear(x, weight, bias, activation, precision, out)


def linear_backward(grad_y, x, weight, y, activation, precision):
    return _gemm.linear_backward(grad_y, x, weight, y, activation, precision)


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out):
    raise _not_yet("conv2d")


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision):
    raise _not_yet("conv2d_backward")


# ---------------------------------------------------------------- activations


def relu(x, out):
    return _elementwise.relu_forward(x, out)


def tanh(x, out):
    return _elementwise.tanh_forward(x, out)


def sigmoid(x, out):
    return _elementwise.sigmoid_forward(x, out)


def relu_backward(grad_y, y, out):
    return _elementwise.relu_backward(grad_y, y, out)


def tanh_backward(grad_y, y, out):
    return _elementwise.tanh_backward(grad_y, y, out)


def sigmoid_backward(grad_y, y, out):
    return _elementwise.sigmoid_backward(grad_y, y, out)


# ---------------------------------------------------------------- pooling, loss, optimizer


def max_pool2d(x, kernel, stride, padding):
    return _pool.max_pool2d(x, kernel, stride, padding)


def max_pool2d_backward(grad_y, argmax, input_shape):
    # The interface carries no window, so this takes the window-free (per-plane) kernel.
    return _pool.max_pool2d_backward(grad_y, argmax, input_shape)


def softmax_cross_entropy(logits, labels):
    return _softmax.softmax_cross_entropy(logits, labels)


def softmax_cross_entropy_backward(probs, labels):
    return _softmax.softmax_cross_entropy_backward(probs, labels)


def sgd_step(param, grad, velocity, lr, momentum, weight_decay):
    _sgd.sgd_step(param, grad, velocity, lr, momentum, weight_decay)


__all__ = [
    "FLOAT_DTYPES",
    "conv2d",
    "conv2d_backward",
    "linear",
    "linear_backward",
    "matmul",
    "matmul_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sgd_step",
    "sigmoid",
    "sigmoid_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "tanh",
    "tanh_backward",
]
