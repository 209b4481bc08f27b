"""Inputs that pin what the kernels' contracts and the reference define, where random data does not.

tools/mutate.py plants one plausible bug at a time in kernels/; these tests are the ones its
survivors asked for.  Random normal data never holds NaN, infinities, values whose derivative
cancels, ties, or labels outside the row; small shapes never reach the pipelined refill of a
tile or a second round of 32 outputs; and the plain harness cannot see a missing barrier
where ThreadSanitizer can.  Each test names, in its docstring, the bug class it pins.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu
import dlgpu.reference as ref
from dlgpu.cuda import elementwise as cuda_elementwise
from dlgpu.cuda import gemm as cuda_gemm
from dlgpu.cuda import pool as cuda_pool
from dlgpu.cuda import softmax as cuda_softmax
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close, random_array
from dlgpu.testing.harness import HarnessExecutor

# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def plain():
    return HarnessExecutor("plain", multiprocessor_count=1)


# ---------------------------------------------------------------- elementwise

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4,
                    3.4e38, -3.4e38], np.float32)


def test_elementwise_activations_at_special_values(plain):
    """NaN passes ReLU (the contract); sigmoid is 0 or 1 far out, never inf / inf (below -88 the
    kernel's exp(-x) overflows to an exact 0 where the reference has a subnormal)."""
    for op, launcher in (("relu", cuda_elementwise.relu_forward), ("sigmoid", cuda_elementwise.sigmoid_forward),
                         ("tanh", cuda_elementwise.tanh_forward)):
        y = launcher(SPECIAL, np.full_like(SPECIAL, 7.0), executor=plain)
        expected = getattr(ref, op)(SPECIAL)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected), err_msg=op)
        finite = ~np.isnan(expected)
        np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-6, atol=1e-38, err_msg=op)


def test_elementwise_tanh_backward_near_saturation(plain, rng):
    """(1 - y)(1 + y), not 1 - y*y: y within 1e-3 of +-1, where y*y's rounding is the whole answer."""
    x = rng.uniform(4.0, 7.0, 4099).astype(np.float32) * rng.choice([-1.0, 1.0], 4099).astype(np.float32)
    y = np.tanh(x.astype(np.float64)).astype(np.float32)
    grad_y = random_array(rng, x.size)
    grad_x = cuda_elementwise.tanh_backward(grad_y, y, executor=plain)
    assert_close(grad_x, ref.tanh_backward(grad_y, y), elementwise=True)


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("classes", [7, 300])  # a warp per row, a block per row
def test_softmax_labels_outside_the_row_give_nan_rows(classes, rng):
    """A label of -1 or `classes` is never an index (the kernel's contract): that row's loss is
    NaN, its gradient row NaN, the others untouched; under ASan, no read past the logits."""
    executor = HarnessExecutor("asan")
    rows = 4
    logits = random_array(rng, (rows, classes), scale=3.0)
    labels = np.array([classes, 1, -1, classes], np.int64)  # the last row's `classes` is past the array
    loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
    assert np.isnan(loss)
    assert_close(probs, ref.softmax_cross_entropy(logits, np.zeros(rows, np.int64))[1])
    grad = cuda_softmax.softmax_cross_entropy_backward(probs.astype(np.float32), labels, executor=executor)
    assert np.isnan(grad[[0, 2, 3]]).all()
    expected = ref.softmax_cross_entropy_backward(probs[1:2], labels[1:2]) / rows
    assert_close(grad[1:2], expected, elementwise=True)
    with pytest.raises(ArgumentError, match=rf"label (-1|{classes}) is outside \[0, {classes}\)"):
        dlgpu.check_errors()  # and the kernels reported a bad label in the error flag


# ---------------------------------------------------------------- pool


def test_pool_ties_go_to_the_first_element(plain, rng):
    """Windows full of equal values: argmax is the first in row-major order, as in the reference."""
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float32)
    for kernel, stride, padding in (((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (0, 1))):
        y, argmax = cuda_pool.max_pool2d(x, kernel, stride, padding, executor=plain)
        expected_y, expected_argmax = ref.max_pool2d(x, kernel, stride=stride, padding=padding)
        np.testing.assert_array_equal(argmax, expected_argmax)
        np.testing.assert_array_equal(y, expected_y)


def test_pool_backward_planes_rounds_under_tsan(rng):
    """Hundreds of outputs per plane and overlapping windows: one input element is the argmax of
    outputs in different rounds of 32, updated by different lanes, which __syncwarp orders."""
    executor = HarnessExecutor("tsan")
    x = rng.integers(0, 4, (1, 2, 14, 13)).astype(np.float32)  # ties: many windows share a maximum
    y, argmax = cuda_pool.max_pool2d(x, (3, 3), (1, 1), (1, 1), executor=executor)
    grad_y = random_array(rng, y.shape)
    grad_x = cuda_pool.max_pool2d_backward(grad_y, argmax, x.shape, executor=executor)
    assert_close(grad_x, ref.max_pool2d_backward(grad_y, argmax.astype(np.int64), x.shape, 3, 1, 1))


# ---------------------------------------------------------------- gemm pipelines under TSan


@pytest.mark.parametrize("layout", ["nn", "tn", "tt"])  # the layouts with an operand loaded by cp.async
def test_gemm_simt_pipeline_under_tsan(layout, rng):
    """K = 52 is 7 k-tiles: the 3-stage ring refills every stage, which only a wait_group, a
    barrier before the refill and a barrier before the reads keep apart."""
    ta, tb = layout[0] == "t", layout[1] == "t"
    m, n, k = 36, 20, 52
    a = random_array(rng, (k, m) if ta else (m, k))
    b = random_array(rng, (n, k) if tb else (k, n))
    c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, variant="simt", config="64x64",
                       executor=HarnessExecutor("tsan"))
    assert_close(c, ref.matmul(a, b, transpose_a=ta, transpose_b=tb))


def test_gemm_tc_pipeline_under_tsan(rng):
    """tf32 at K = 52: four 16-deep k-tiles through the 3-stage cp.async ring."""
    m, n, k = 36, 20, 52
    a, b = random_array(rng, (m, k)), random_array(rng, (k, n))
    c = cuda_gemm.gemm(a, b, precision="tf32", variant="tc", config="64x64", executor=HarnessExecutor("tsan"))
    assert_close(c, ref.matmul(a, b, transpose_a=False, transpose_b=False), precision="tf32")
