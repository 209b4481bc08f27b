"""The bias_grad stem (kernels/bias_grad.cu): the deterministic bias gradient behind grad_b.

It has no public op: linear_backward and conv2d_backward return its result, and
their checks (tests/test_gemm.py, tests/test_conv2d.py) compare it with the
reference.  Here: the kernels on the CPU harness, plain and sanitized (row chunks,
an NCHW gradient with a prime plane, the ReLU mask); on a GPU against a float64
sum at sizes up to 2^26, misaligned, and bit for bit twice; and the harness
against the device.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu.reference as R
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cuda import bias_grad as cuda_bias_grad
from dlgpu.testing import assert_close, harness, random_array
from dlgpu.testing.gpu import device_view
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.suites import kernel_tests


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


def check_bias_grad(executor, rng):
    # 70 rows: three row chunks in the first pass; (N, C, H, W) with a prime spatial size.
    for shape in ((1, 1), (70, 3), (5, 7, 3, 5), (33, 2, 1, 1)):
        grad_y = random_array(rng, shape)
        axes = (0,) + tuple(range(2, len(shape)))
        grad_b = cuda_bias_grad.bias_grad(grad_y, out=np.full(shape[1], np.nan, np.float32), executor=executor)
        assert_close(grad_b, grad_y.astype(np.float64).sum(axis=axes))
        y = R.relu(random_array(rng, shape)).astype(np.float32)
        grad_b = cuda_bias_grad.bias_grad(grad_y, y, executor=executor)
        assert_close(grad_b, np.where(y > 0, grad_y, 0).astype(np.float64).sum(axis=axes))


def check_bias_grad_16bit(executor, rng):
    """bfloat16 and float16 grad_y: float32 sums, grad_b rounded once; 8-half vectors (16 columns) and the
    scalar path (a prime row length)."""
    for dtype in STORAGE_DTYPES:
        for shape in ((70, 16), (5, 7, 3, 5)):
            grad_y = random_array(rng, shape, dtype)
            axes = (0,) + tuple(range(2, len(shape)))
            y = R.relu(random_array(rng, shape)).astype(dtype)
            for mask in (None, y):
                grad_b = cuda_bias_grad.bias_grad(grad_y, mask, executor=executor)
                masked = grad_y.astype(np.float64) if mask is None else np.where(y > 0, grad_y, 0).astype(np.float64)
                assert grad_b.dtype == dtype
                assert_close(grad_b, masked.sum(axis=axes))


KERNEL_CASES = (
    KernelCase("bias_grad", "bias_grad",
               ("bias_grad_partial_f32", "bias_grad_relu_partial_f32", "bias_grad_finish_f32"), check_bias_grad),
    KernelCase("bias_grad_16bit", "bias_grad",
               tuple(f"bias_grad_{kernel}_{suffix}" for suffix in ("bf16", "fp16")
                     for kernel in ("partial", "relu_partial", "finish")), check_bias_grad_16bit),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("bias_grad", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


BIAS_SHAPES = [(1, 1), (3, 5), (7, 129), (33, 1000), (1031, 3), (4097, 10), (2, 3, 5, 5), (5, 7, 1, 1),
               (3, 2, 7, 9), (65, 3, 4, 4), (8, 64, 56, 56), (2**16, 2**10)]


def bias_reference(grad_y: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    g = grad_y.astype(np.float64)
    if y is not None:
        g = np.where(y > 0, g, 0.0)
    return g.sum(axis=(0, *range(2, g.ndim)))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", BIAS_SHAPES)
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("masked", (False, True))
def test_bias_grad_on_the_gpu(cp, rng, poison, shape, offset, masked):
    from dlgpu.cuda.bias_grad import bias_grad

    grad_y = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32) if masked else None
    d_grad_y = device_view(cp, grad_y, offset)
    d_y = None if y is None else device_view(cp, y, offset)
    got = bias_grad(d_grad_y, d_y, executor=poison)
    assert_close(got, bias_reference(grad_y, y))
    again = bias_grad(d_grad_y, d_y, executor=poison)
    np.testing.assert_array_equal(cp.asnumpy(again), cp.asnumpy(got))  # deterministic: same bits


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu_through_the_launcher():
    """The same launcher call on the GPU and on the harness (same grids): outputs must agree."""
    def calls(executor):
        grad_y = executor.xp.asarray(random_array(np.random.default_rng(7), (70, 3)))
        return cuda_bias_grad.bias_grad(grad_y, executor=executor)

    assert len(harness.cross_check(calls)) == 1
