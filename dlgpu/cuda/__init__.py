"""The CUDA backend: our kernels (kernels/*.cu), compiled by NVRTC and launched through CuPy.

dlgpu.functional picks this module for CuPy arrays and calls its functions with
arguments already validated and normalized (C-contiguous float32 arrays, pairs
for stride/padding, precision resolved).  Importing it needs neither CuPy nor a
GPU: the executor, which does, is made on the first launch.

conv2d and conv2d_backward are dlgpu.cuda.conv2d's own functions (imported by name, as
dlgpu.cpu does, so that the package attribute `conv2d` stays the function even though a
submodule shares its name: reach the launcher module as sys.modules["dlgpu.cuda.conv2d"]
or importlib.import_module).
"""

import numpy as np

from dlgpu.cuda import elementwise as _elementwise
from dlgpu.cuda.conv2d import conv2d, conv2d_backward
from dlgpu.cuda import gemm as _gemm
from dlgpu.cuda import pool as _pool
from dlgpu.cuda import sgd as _sgd
from dlgpu.cuda import softmax as _softmax

FLOAT_DTYPES = (np.float32,)


# ---------------------------------------------------------------- products and convolutions


def matmul(a, b, transpose_a, transpose_b, precision, out):
    return _gemm.matmul(a, b, transpose_a, transpose_b, precision, out)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision):
    return _gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision)


def linear(x, weight, bias, activation, precision, out):
    return _gemm.linear(x, weight, bias, activation, precision, out)


def linear_backward(grad_y, x, weight, y, activation, precision):
    return _gemm.linear_backward(grad_y, x, weight, y, activation, precision)


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
