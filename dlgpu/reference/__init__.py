"""The float64 NumPy oracle for every dlgpu op.

Same names and keyword arguments as ``dlgpu.functional``; stride, padding,
dilation and kernel_size take an int or an (h, w) pair; ``precision`` is accepted
and ignored; there is no ``out=``.  Inputs of any float dtype are computed in
float64 and the results are float64 (max_pool2d's argmax is int32).  Written to be
obviously right, not fast: convolution by im2col, loops only over filter taps.
sgd_step is the exception to "returns float64": it updates the caller's arrays
in place, in their own dtype, after computing the step in float64.
"""

from dlgpu.reference.conv2d import conv2d, conv2d_backward
from dlgpu.reference.elementwise import (
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from dlgpu.reference.gemm import linear, linear_backward, matmul, matmul_backward
from dlgpu.reference.pool import max_pool2d, max_pool2d_backward
from dlgpu.reference.sgd import sgd_step
from dlgpu.reference.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

__all__ = [
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
