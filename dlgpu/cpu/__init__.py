"""The CPU backend: NumPy's BLAS for products, numba-compiled parallel loops for the rest.

For users without a GPU, and the backend dlgpu.functional picks for NumPy
arrays.  Functions take positional arguments already validated and
normalized by dlgpu.functional (C-contiguous, one dtype, pairs for
stride/padding/dilation, precision resolved); outputs have the inputs' dtype.
Each module's docstring says how its op is computed and why.
"""

import os

import numpy as np

# numba's OpenMP workers spin after each parallel loop by default, and every op
# here alternates numba loops with NumPy's BLAS, whose own threads then find the
# cores taken: on a small or shared machine that costs 10x and more (measured:
# LeNet conv forward+backward 40 ms spinning, 2.3 ms passive, with one other busy
# process on 2 cores).  Passive workers sleep instead.  setdefault keeps a
# user's own choice.  It takes effect only if no OpenMP runtime has started in
# the process yet (numba starts one at its first parallel call, not at import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
