"""The float64 NumPy oracle for every dlgpu op.

Same names and keyword arguments as ``dlgpu.functional``; stride, padding,
dilation and kernel_size take an int or an (h, w) pair; ``precision`` is accepted
and ignored; there is no ``out=``.  Inputs of any float dtype are computed in
float64 and the results are float64 (max_pool2d's argmax is int32).  Written to be
obviously right, not fast: convolution by im2col, loops only over filter taps.
sgd_step is the exception to "returns float64": it updates the caller's arrays
in place, in their own dtype, after computing the step in float64.
"""

from dlgpu.backend import OPS
from dlgpu.reference.conv2d import *  # noqa: F403 - each stem's oracle is dlgpu/reference/<stem>.py
from dlgpu.reference.elementwise import *  # noqa: F403
from dlgpu.reference.gemm import *  # noqa: F403
from dlgpu.reference.mse import *  # noqa: F403
from dlgpu.reference.pool import *  # noqa: F403
from dlgpu.reference.sgd import *  # noqa: F403
from dlgpu.reference.softmax import *  # noqa: F403

# The same names as dlgpu.functional, which are the Backend protocol's.
__all__ = list(OPS)
