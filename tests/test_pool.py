"""The pool stem (kernels/pool.cu): 2-D max pooling with argmax, and its backward.

Everything about it, executor by executor: the float64 reference by hand (a tie,
NaNs, padding never chosen), against a direct per-window loop and against finite
differences; every check and bad input of dlgpu/cases/pool.py on the CPU backend, on the CPU
harness and on a GPU; the CPU backend in float32 and float64 with ties and NaNs;
the kernels on the harness (both backward kernels, plain and sanitized); the
kernels on a GPU at odd shapes with ties and the NaN rule; bad input; and
properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases import pool as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cuda import pool as cuda_pool
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close, check_gradients, harness, random_array, same_bits, to_numpy
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.properties import INVALID_OK, assert_same_specials, common, property_test, with_specials
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------


def direct_max_pool2d(x, kernel, stride, padding):
    """The contract's choice rule, one window at a time."""
    N, C, H, W = x.shape
    P = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    Q = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    y = np.empty((N, C, P, Q))
    argmax = np.empty((N, C, P, Q), dtype=np.int32)
    for n, c, p, q in np.ndindex(N, C, P, Q):
        best, best_at = None, None
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                h, w = p * stride[0] - padding[0] + i, q * stride[1] - padding[1] + j
                if not (0 <= h < H and 0 <= w < W):
                    continue
                value = x[n, c, h, w]
                if best is None or (not math.isnan(best) and (math.isnan(value) or value > best)):
                    best, best_at = value, h * W + w
        y[n, c, p, q], argmax[n, c, p, q] = best, best_at
    return y, argmax


def test_max_pool2d_by_hand_with_a_tie_and_nans():
    nan = np.nan
    x = np.array(
        [
            [5.0, 5.0, 1.0, nan],
            [1.0, 2.0, 9.0, 3.0],
            [nan, 7.0, -1.0, -2.0],
            [8.0, 0.0, -3.0, -4.0],
        ]
    ).reshape(1, 1, 4, 4)
    y, argmax = R.max_pool2d(x, 2)
    assert argmax.dtype == np.int32 and y.dtype == np.float64
    # The tie goes to the first 5; a NaN wins over the later 9; a leading NaN stays over 7 and 8.
    np.testing.assert_array_equal(argmax[0, 0], [[0, 3], [8, 10]])
    np.testing.assert_array_equal(y[0, 0], [[5.0, nan], [nan, -1.0]])


def test_max_pool2d_padding_is_never_chosen():
    x = np.array([[-3.0, -1.0], [-2.0, -4.0]]).reshape(1, 1, 2, 2)
    y, argmax = R.max_pool2d(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[-3.0, -1.0, -1.0], [-2.0, -1.0, -1.0], [-2.0, -2.0, -4.0]])
    np.testing.assert_array_equal(argmax[0, 0], [[0, 1, 1], [2, 1, 1], [2, 2, 3]])
    # All -inf: still the first real element of each window, never the padding.
    y, argmax = R.max_pool2d(np.full((1, 1, 2, 2), -np.inf), 2, stride=1, padding=1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(argmax[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


# kernel, stride, padding, (H, W): overlapping 3x3 stride 2, padding, odd sizes, non-square.
REFERENCE_POOL_CASES = [
    (3, 2, 0, (7, 9)),
    (3, 2, 1, (7, 8)),
    (2, None, 0, (5, 6)),
    ((2, 3), (1, 2), (1, 1), (5, 7)),
    (1, 1, 0, (3, 4)),
]


@pytest.mark.parametrize("kernel, stride, padding, hw", REFERENCE_POOL_CASES)
def test_max_pool2d_matches_the_rule_on_ties_and_nans(rng, kernel, stride, padding, hw):
    # Small integers make ties common; a few NaNs test propagation.
    x = rng.integers(-3, 4, size=(2, 3, *hw)).astype(np.float64)
    x[rng.random(x.shape) < 0.05] = np.nan
    y, argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    expected_y, expected_argmax = direct_max_pool2d(
        x, pair(kernel), pair(kernel if stride is None else stride), pair(padding)
    )
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(y, expected_y)


@pytest.mark.parametrize("kernel, stride, padding, hw", REFERENCE_POOL_CASES)
def test_max_pool2d_backward_matches_finite_differences(rng, kernel, stride, padding, hw):
    # Distinct values spaced far beyond the step: no tie, so max is differentiable.
    shape = (2, 2, *hw)
    x = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 + 0.001 * rng.random(shape)
    y, argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
    grad_y = rng.standard_normal(y.shape)
    grad_x = R.max_pool2d_backward(grad_y, argmax, x.shape, kernel, stride, padding)
    check_gradients(
        lambda: R.max_pool2d(x, kernel, stride=stride, padding=padding)[0], {"x": x}, {"x": grad_x}, grad_y
    )


def test_max_pool2d_backward_adds_where_windows_overlap():
    # 2x2 windows, stride 1, padding 1 on a 2x2 plane: element 0 lies in the first three windows.
    argmax = np.array([[0, 0, 1], [0, 3, 1], [2, 2, 3]], dtype=np.int32).reshape(1, 1, 3, 3)
    grad_y = np.array([[1.0, 2.0, 16.0], [4.0, 8.0, 32.0], [64.0, 128.0, 256.0]]).reshape(1, 1, 3, 3)
    grad_x = R.max_pool2d_backward(grad_y, argmax, (1, 1, 2, 2), 2, 1, 1)
    np.testing.assert_array_equal(grad_x[0, 0], [[7.0, 48.0], [192.0, 264.0]])


def test_max_pool2d_backward_ignores_an_argmax_outside_its_window_on_every_backend(rng):
    # Window (0, 1) covers columns 2..3; an argmax of 0 (column 0) is not one of its taps.
    argmax = np.array([[0, 0], [8, 10]], dtype=np.int32).reshape(1, 1, 2, 2)
    grad_y = np.array([[1.0, 2.0], [4.0, 8.0]], dtype=np.float32).reshape(1, 1, 2, 2)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[2, 0], expected[2, 2] = 1.0, 4.0, 8.0
    np.testing.assert_array_equal(R.max_pool2d_backward(grad_y, argmax, (1, 1, 4, 4), 2)[0, 0], expected)
    np.testing.assert_array_equal(F.max_pool2d_backward(grad_y, argmax, (1, 1, 4, 4), 2)[0, 0], expected)


def test_max_pool2d_refuses_padding_over_half_the_kernel():
    with pytest.raises(ArgumentError, match="padding"):
        R.max_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ArgumentError, match="argmax"):
        R.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 4), (1, 1, 2, 2), 2)


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/pool.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


# (N, C, H, W, kernel, stride, padding): overlapping windows, padding, ragged edges.
CPU_POOL_CASES = [
    (1, 1, 1, 1, 1, None, 0),
    (2, 3, 13, 11, 2, None, 0),
    (3, 2, 9, 7, 3, 2, 1),
    (1, 5, 17, 19, (3, 2), (1, 2), (1, 1)),
    (2, 1, 28, 28, 5, 3, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CPU_POOL_CASES, ids=lambda c: "x".join(map(str, c[:4])))
def test_max_pool2d_on_the_cpu(rng, dtype, case):
    n, c, h, w, kernel, stride, padding = case
    # Small integers make ties common, so the first-in-window rule is exercised.
    for x in (random_array(rng, (n, c, h, w), dtype), rng.integers(-2, 3, (n, c, h, w)).astype(dtype)):
        y, argmax = F.max_pool2d(x, kernel, stride=stride, padding=padding)
        y_ref, argmax_ref = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        assert y.dtype == dtype and argmax.dtype == np.int32
        np.testing.assert_array_equal(argmax, argmax_ref)
        assert_close(y, y_ref, dtype=dtype, elementwise=True)

        grad_y = random_array(rng, y.shape, dtype)
        window = (kernel, stride, padding)
        grad_x = F.max_pool2d_backward(grad_y, argmax, x.shape, *window)
        assert grad_x.dtype == dtype
        assert_close(grad_x, R.max_pool2d_backward(grad_y, argmax_ref, x.shape, *window), dtype=dtype,
                     elementwise=True)
        assert same_bits(grad_x, F.max_pool2d_backward(grad_y, argmax, x.shape, *window))


def test_max_pool2d_nan_propagates_and_stays(rng):
    x = random_array(rng, (1, 2, 6, 6), np.float32)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 2] = np.nan  # a later NaN in the same window must not move the argmax
    x[0, 1, 4, 5] = np.nan
    y, argmax = F.max_pool2d(x, 3, stride=1, padding=1)
    y_ref, argmax_ref = R.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1 * 6 + 1
    np.testing.assert_array_equal(y[~np.isnan(y)], y_ref[~np.isnan(y_ref)].astype(np.float32))


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


HARNESS_POOL_CASES = (  # (N, C, H, W), kernel, stride, padding
    ((2, 3, 7, 5), (3, 2), (2, 1), (1, 1)),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((3, 2, 13, 11), (3, 3), (3, 2), (1, 0)),
    ((1, 5, 8, 8), (2, 2), (2, 2), (0, 0)),
)
# On the harness's one SM the 2-D grid is one wave of POOL_MIN_BLOCKS blocks: 2070 input elements per plane take
# the backward's x loop past one trip, and 3 planes both kernels' y loop.  The column stride is the larger: a row
# range divided by it would miss windows (dividing by the smaller one only visits windows that cannot match).
HARNESS_STRIDE_CASE = ((1, 3, 46, 45), (3, 3), (1, 2), (1, 1))


@pytest.mark.parametrize("planes, per_plane", [(1, 1), (4096, 784), (4096, 3136), (1, 10**7), (200_000, 9)])
def test_the_pool_grid_is_one_wave_at_the_promised_occupancy(planes, per_plane):
    """x covers a plane (or a full wave of it), y the planes that still fit, never past gridDim.y's limit: the
    grid is at most POOL_MIN_BLOCKS blocks per SM, what the kernels' __launch_bounds__ promise."""
    class Device:
        multiprocessor_count = 132

    x, y, z = cuda_pool._plane_grid(planes, per_plane, Device())
    wave = cuda_pool.POOL_MIN_BLOCKS * Device.multiprocessor_count
    assert z == 1 and 1 <= x * y <= wave and y <= min(planes, cuda_pool.MAX_GRID_Y)
    assert x == min(math.ceil(per_plane / cuda_pool.POOL_THREADS), wave)
    assert y == min(planes, wave // x)  # no block idle for want of a plane, none past one wave


def check_pool(executor, rng, cases=HARNESS_POOL_CASES):
    for shape, kernel, stride, padding in cases:
        x = random_array(rng, shape)
        y, argmax = cuda_pool.max_pool2d(x, kernel, stride, padding, executor=executor)
        expected_y, expected_argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        np.testing.assert_array_equal(argmax, expected_argmax)
        assert_close(y, expected_y, elementwise=True)
        grad_y = random_array(rng, y.shape)
        expected = R.max_pool2d_backward(grad_y, expected_argmax, shape, kernel, stride, padding)
        for window in ((), (kernel, stride, padding)):  # plane walk, and gather by window
            grad_x = cuda_pool.max_pool2d_backward(grad_y, argmax, shape, *window, executor=executor)
            assert_close(grad_x, expected)


def check_pool_16bit(executor, rng):
    """bfloat16 and float16: y is exact (an element of x); overlapping windows' gradients are summed in
    float32 and rounded once, by both backward kernels."""
    shape, kernel, stride, padding = HARNESS_POOL_CASES[0]
    for dtype in STORAGE_DTYPES:
        x = random_array(rng, shape, dtype)
        y, argmax = cuda_pool.max_pool2d(x, kernel, stride, padding, executor=executor)
        expected_y, expected_argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        np.testing.assert_array_equal(argmax, expected_argmax)
        assert y.dtype == dtype and same_bits(y, expected_y.astype(dtype))
        grad_y = random_array(rng, y.shape, dtype)
        expected = R.max_pool2d_backward(grad_y, expected_argmax, shape, kernel, stride, padding)
        for window in ((), (kernel, stride, padding)):  # plane walk, and gather by window
            grad_x = cuda_pool.max_pool2d_backward(grad_y, argmax, shape, *window, executor=executor)
            assert grad_x.dtype == dtype
            assert_close(grad_x, expected)


KERNEL_CASES = (
    KernelCase("pool", "pool", ("max_pool2d_forward_f32", "max_pool2d_backward_f32", "max_pool2d_backward_planes_f32"),
               check_pool),
    KernelCase("pool_16bit", "pool", tuple(f"max_pool2d_{kernel}_{suffix}" for suffix in ("bf16", "fp16")
                                           for kernel in ("forward", "backward", "backward_planes")),
               check_pool_16bit),
    # Index arithmetic only (no sharing between threads): TSan would see nothing new, slowly.
    KernelCase("pool_strides", "pool", ("max_pool2d_forward_f32", "max_pool2d_backward_f32"),
               lambda executor, rng: check_pool(executor, rng, (HARNESS_STRIDE_CASE,)), modes=("plain", "asan")),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("pool", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


GPU_POOL_CASES = [
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((2, 3, 7, 5), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 9, 9), (3, 2), (1, 1), (1, 0)),
    ((2, 2, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((1, 1, 13, 11), (5, 5), (3, 2), (2, 2)),
    ((3, 1, 6, 7), (4, 3), (1, 2), (2, 1)),
    ((5, 3, 31, 33), (3, 3), (2, 2), (1, 1)),
    ((8, 16, 56, 56), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("shape,kernel,stride,padding", GPU_POOL_CASES)
def test_max_pool2d_on_the_gpu(cp, rng, poison, shape, kernel, stride, padding):
    from dlgpu.cuda.pool import max_pool2d, max_pool2d_backward

    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = x.reshape(-1)[-1]  # ties: the first in the window must win
    y_ref, argmax_ref = R.max_pool2d(x, kernel, stride=stride, padding=padding)
    y, argmax = max_pool2d(cp.asarray(x), kernel, stride, padding, executor=poison)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(cp.asnumpy(argmax), argmax_ref)
    assert_close(y, y_ref, elementwise=True)

    grad_y = rng.standard_normal(y_ref.shape).astype(np.float32)
    grad_ref = R.max_pool2d_backward(grad_y, argmax_ref, shape, kernel, stride, padding)
    d_grad_y = cp.asarray(grad_y)
    gathered = max_pool2d_backward(d_grad_y, argmax, shape, kernel, stride, padding, executor=poison)
    assert_close(gathered, grad_ref)
    walked = max_pool2d_backward(d_grad_y, argmax, shape, executor=poison)
    assert_close(walked, grad_ref)
    np.testing.assert_array_equal(
        cp.asnumpy(max_pool2d_backward(d_grad_y, argmax, shape, executor=poison)), cp.asnumpy(walked)
    )

    public_y, public_argmax = F.max_pool2d(cp.asarray(x), kernel, stride=stride, padding=padding)
    np.testing.assert_array_equal(cp.asnumpy(public_argmax), argmax_ref)
    assert_close(F.max_pool2d_backward(d_grad_y, public_argmax, shape, kernel, stride, padding), grad_ref)


@pytest.mark.gpu
def test_max_pool2d_nan_rule(cp, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    x[1, 2, 4, 4] = np.nan
    x[1, 2, 4, 6] = np.nan
    y, argmax = F.max_pool2d(cp.asarray(x), 3, stride=1, padding=1)
    y_ref, argmax_ref = R.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(np.isnan(cp.asnumpy(y)), np.isnan(y_ref))
    np.testing.assert_array_equal(cp.asnumpy(argmax), argmax_ref)


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu_through_the_launchers():
    """The same launcher calls on the GPU and on the harness (same grids): outputs must agree."""
    def calls(executor):
        x = executor.xp.asarray(random_array(np.random.default_rng(7), (2, 3, 13, 11)))
        y, argmax = cuda_pool.max_pool2d(x, (3, 3), (2, 2), (1, 1), executor=executor)
        return (y, argmax, cuda_pool.max_pool2d_backward(y, argmax, x.shape, executor=executor),
                cuda_pool.max_pool2d_backward(y, argmax, x.shape, (3, 3), (2, 2), (1, 1), executor=executor))

    assert len(harness.cross_check(calls)) == 4


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@st.composite
def pool_case(draw, backend):
    rng, dtype, _ = draw(common(backend))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 15))
    w = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 15))
    x = random_array(rng, (n, c, h, w), dtype)
    return rng, dtype, x, dict(kernel_size=kernel, stride=stride, padding=padding)


@property_test()
def test_max_pool2d_matches_reference(backend, data):
    _, dtype, x, hyper = data.draw(pool_case(backend))
    y, argmax = F.max_pool2d(backend.put(x), hyper["kernel_size"], stride=hyper["stride"], padding=hyper["padding"])
    ref_y, ref_argmax = R.max_pool2d(x, hyper["kernel_size"], stride=hyper["stride"], padding=hyper["padding"])
    # a max is exact: no rounding, and random data has no ties
    np.testing.assert_array_equal(to_numpy(y), ref_y.astype(dtype))
    assert to_numpy(argmax).dtype == np.int32
    np.testing.assert_array_equal(to_numpy(argmax), ref_argmax)


@property_test()
def test_max_pool2d_backward_matches_reference(backend, data):
    rng, dtype, x, hyper = data.draw(pool_case(backend))
    _, argmax = R.max_pool2d(x, hyper["kernel_size"], stride=hyper["stride"], padding=hyper["padding"])
    grad_y = random_array(rng, argmax.shape, dtype)
    window = (hyper["kernel_size"], hyper["stride"], hyper["padding"])
    got = F.max_pool2d_backward(backend.put(grad_y), backend.put(argmax), x.shape, *window)
    assert_close(got, R.max_pool2d_backward(grad_y, argmax, x.shape, *window), dtype=dtype)


@INVALID_OK
@property_test()
def test_max_pool2d_specials_match_reference(backend, data):
    rng, dtype, x, hyper = data.draw(pool_case(backend))
    x = with_specials(rng, x.shape, dtype, data.draw(st.integers(1, 6)))
    y, argmax = F.max_pool2d(backend.put(x), hyper["kernel_size"], stride=hyper["stride"], padding=hyper["padding"])
    ref_y, ref_argmax = R.max_pool2d(x, hyper["kernel_size"], stride=hyper["stride"], padding=hyper["padding"])
    assert_same_specials(y, ref_y, dtype=dtype, elementwise=True)
    np.testing.assert_array_equal(to_numpy(argmax), ref_argmax)
