"""The CPU backend: numba-compiled parallel loops on one pool of threads.

For users without a GPU, and the backend dlgpu.functional picks for NumPy
arrays.  Functions take positional arguments already validated and
normalized by dlgpu.functional (C-contiguous, one dtype, pairs for
stride/padding/dilation, precision resolved); outputs have the inputs' dtype.
Each module's docstring says how its op is computed and why.
"""

import numpy as np

from dlgpu.cpu.threads import start_pool

# Before any kernel runs: numba's threads must load asleep-when-idle (threads.py says why and how).
start_pool()

from dlgpu.cpu.conv2d import conv2d, conv2d_backward
from dlgpu.cpu.elementwise import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from dlgpu.cpu.gemm import linear, linear_backward, matmul, matmul_backward
from dlgpu.cpu.pool import max_pool2d, max_pool2d_backward
from dlgpu.cpu.sgd import sgd_step
from dlgpu.cpu.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

FLOAT_DTYPES = (np.float32, np.float64)

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
