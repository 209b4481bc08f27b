"""The elementwise stem (kernels/elementwise.cu): relu, tanh, sigmoid and their backward passes.

Everything about them, executor by executor: the float64 reference by hand and
against finite differences; every check and bad input of dlgpu/cases/elementwise.py on the CPU
backend, on the CPU harness and on a GPU; the CPU backend in float32 and float64,
in place and at extremes; the kernels on the harness (plain and sanitized, one
element to several grid-stride trips); the kernels on a GPU at sizes 1, primes,
2^k +- 1, misaligned views and 2^26+ elements, with the NaN rules; bad input;
and properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases import elementwise as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cuda import elementwise as cuda_elementwise
from dlgpu.testing import assert_away_from_kink, assert_close, check_gradients, harness, random_array, same_bits
from dlgpu.testing.gpu import device_view, poisoned
from dlgpu.testing.kernel_cases import KernelCase, nan_like
from dlgpu.testing.properties import INVALID_OK, assert_same_specials, common, property_test, shapes, with_specials
from dlgpu.testing.suites import case_tests, kernel_tests

ACTIVATIONS = ("relu", "tanh", "sigmoid")
DTYPES = [np.float32, np.float64]


def nan_array(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# ---------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------


def test_activations_by_hand():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(R.relu(x), [0.0, 0.0, 3.0])
    np.testing.assert_allclose(R.tanh(x), [math.tanh(-2.0), 0.0, math.tanh(3.0)], rtol=1e-15)
    np.testing.assert_allclose(R.sigmoid(x), [1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-3)], rtol=1e-15)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        np.testing.assert_array_equal(R.sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])
    assert np.isnan(R.relu(np.array([np.nan]))[0])


@pytest.mark.parametrize(
    "forward, backward",
    [(R.relu, R.relu_backward), (R.tanh, R.tanh_backward), (R.sigmoid, R.sigmoid_backward)],
    ids=["relu", "tanh", "sigmoid"],
)
def test_activation_backward_from_output_matches_finite_differences(rng, forward, backward):
    x = rng.standard_normal((3, 4, 5)) * 2
    assert_away_from_kink(x)
    y = forward(x)
    grad_y = rng.standard_normal(x.shape)
    check_gradients(lambda: forward(x), {"x": x}, {"x": backward(grad_y, y)}, grad_y)


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/elementwise.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_on_the_cpu(rng, dtype, name):
    forward, backward = getattr(F, name), getattr(F, f"{name}_backward")
    ref_forward, ref_backward = getattr(R, name), getattr(R, f"{name}_backward")
    for shape in [(1,), (7, 13), (2, 3, 5, 67)]:
        x = random_array(rng, shape, dtype, scale=3.0)
        out = nan_array(shape, dtype)
        y = forward(x, out=out)
        assert y is out
        assert_close(y, ref_forward(x), dtype=dtype, elementwise=True)

        grad_y = random_array(rng, shape, dtype)
        out = nan_array(shape, dtype)
        grad_x = backward(grad_y, y, out=out)
        assert grad_x is out
        assert_close(grad_x, ref_backward(grad_y, y), dtype=dtype, elementwise=True)

        # In place: out is the input itself.
        expected_y, expected_g = y.copy(), grad_x.copy()
        assert forward(x, out=x) is x and same_bits(x, expected_y)
        assert backward(grad_y, y, out=grad_y) is grad_y and same_bits(grad_y, expected_g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_at_extremes(dtype):
    x = np.array([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4], dtype=dtype)
    for name in ACTIVATIONS:
        y = getattr(F, name)(x)
        assert np.all(np.isfinite(y)), name
        assert_close(y, getattr(R, name)(x), dtype=dtype, elementwise=True)
    assert np.isnan(F.relu(np.array([np.nan], dtype=dtype)))[0]


def test_tanh_backward_keeps_its_digits_near_saturation():
    # 1 - y^2 for |y| near 1 cancels; every element must still be right to float32 rounding.
    y = np.array([0.99, 0.999, -0.9995, 0.99999, 0.5], dtype=np.float32)
    grad_y = np.ones_like(y)
    np.testing.assert_allclose(F.tanh_backward(grad_y, y), R.tanh_backward(grad_y, y), rtol=2e-7)
    np.testing.assert_allclose(F.sigmoid_backward(grad_y, y), R.sigmoid_backward(grad_y, y), rtol=2e-7)


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


# 1: a single element; 37: head and tail only; 20011 with one SM: the grid-stride loop
# takes the four-float4 batch several times.
HARNESS_SIZES = (1, 37, 20011)


def check_activations(executor, rng):
    for n in HARNESS_SIZES:
        base = random_array(rng, n + 1, scale=3.0)
        for x in (base[:n], base[1:]):  # aligned with out, and one element off (all scalar)
            for op, launcher in (("relu", cuda_elementwise.relu_forward), ("tanh", cuda_elementwise.tanh_forward),
                                 ("sigmoid", cuda_elementwise.sigmoid_forward)):
                y = launcher(x, nan_like(x), executor=executor)
                assert_close(y, getattr(R, op)(x), elementwise=True)
        x = random_array(rng, n)
        expected = R.tanh(x)
        cuda_elementwise.tanh_forward(x, x, executor=executor)  # in place
        assert_close(x, expected, elementwise=True)


def check_activation_backward(executor, rng):
    for n in HARNESS_SIZES:
        grad_y = random_array(rng, n)
        for op, launcher in (("relu", cuda_elementwise.relu_backward), ("tanh", cuda_elementwise.tanh_backward),
                             ("sigmoid", cuda_elementwise.sigmoid_backward)):
            y = getattr(R, op)(random_array(rng, n)).astype(np.float32)
            grad_x = launcher(grad_y, y, nan_like(y), executor=executor)
            assert_close(grad_x, getattr(R, f"{op}_backward")(grad_y, y), elementwise=True)
        y = R.sigmoid(random_array(rng, n)).astype(np.float32)
        expected = R.sigmoid_backward(grad_y, y)
        cuda_elementwise.sigmoid_backward(grad_y, y, y, executor=executor)  # out is y
        assert_close(y, expected, elementwise=True)


def check_16bit_storage(executor, rng):
    """Every activation and conversion on bfloat16 and float16 arrays (few launches: each costs a process
    under the sanitizers)."""
    for dtype in STORAGE_DTYPES:
        # 2011 with one SM: head, 8-half chunks, tail, several grid trips; one element off: all scalar.
        base = random_array(rng, 2012, dtype, scale=3.0)
        for op in ACTIVATIONS:
            x = base[:2011] if op != "relu" else base[1:]
            y = getattr(cuda_elementwise, f"{op}_forward")(x, nan_like(x), executor=executor)
            assert y.dtype == dtype
            assert_close(y, getattr(R, op)(x))
            grad_y = random_array(rng, x.size, dtype)
            grad_x = getattr(cuda_elementwise, f"{op}_backward")(grad_y, y, executor=executor)
            assert grad_x.dtype == dtype
            assert_close(grad_x, getattr(R, f"{op}_backward")(grad_y, y))
        # Conversions: to 16 bits rounds exactly as NumPy / ml_dtypes do (nearest even), back is exact.
        wide = random_array(rng, 2011, np.float32) * np.float32(1 + 2.0**-9)  # off the 16-bit grid
        narrow = cuda_elementwise.convert(wide, dtype, executor=executor)
        assert same_bits(narrow, wide.astype(dtype))
        assert same_bits(cuda_elementwise.convert(narrow, np.float32, executor=executor), narrow.astype(np.float32))


STORAGE_KERNELS = tuple(f"{op}_{direction}_{suffix}" for op in ACTIVATIONS for direction in ("forward", "backward")
                        for suffix in ("bf16", "fp16"))
KERNEL_CASES = (
    KernelCase("activations", "elementwise", ("relu_forward_f32", "tanh_forward_f32", "sigmoid_forward_f32"),
               check_activations),
    KernelCase("activation_backward", "elementwise",
               ("relu_backward_f32", "tanh_backward_f32", "sigmoid_backward_f32"), check_activation_backward),
    KernelCase("16bit_storage", "elementwise",
               (*STORAGE_KERNELS, "convert_f32_to_bf16", "convert_bf16_to_f32", "convert_f32_to_fp16",
                "convert_fp16_to_f32"), check_16bit_storage),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("elementwise", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


ELEMENTWISE_SIZES = (1, 2, 3, 5, 7, 13, 31, 33, 63, 64, 65, 127, 129, 1021, 4097, 65537)


LARGE = 2**26 + 3


@pytest.mark.gpu
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("n", ELEMENTWISE_SIZES)
@pytest.mark.parametrize("x_offset,out_offset", [(0, 0), (1, 1), (1, 0), (0, 3), (2, 2)])
def test_activation_on_the_gpu(cp, rng, name, n, x_offset, out_offset):
    x = rng.standard_normal(n).astype(np.float32) * 3
    out = poisoned(cp, (n,), out_offset)
    y = getattr(F, name)(device_view(cp, x, x_offset), out=out)
    assert y is out
    assert_close(y, getattr(R, name)(x), elementwise=True)

    grad_y = rng.standard_normal(n).astype(np.float32)
    y_host = cp.asnumpy(y)
    out = poisoned(cp, (n,), out_offset)
    d_grad_y, d_y = device_view(cp, grad_y, x_offset), device_view(cp, y_host, x_offset)
    grad_x = getattr(F, f"{name}_backward")(d_grad_y, d_y, out=out)
    assert_close(grad_x, getattr(R, f"{name}_backward")(grad_y, y_host), elementwise=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_large_misaligned(cp, rng, name):
    x = rng.standard_normal(LARGE).astype(np.float32) * 3
    out = poisoned(cp, (LARGE,), 1)
    y = getattr(F, name)(device_view(cp, x, 1), out=out)
    assert_close(y, getattr(R, name)(x), elementwise=True)
    grad_y = rng.standard_normal(LARGE).astype(np.float32)
    grad_x = getattr(F, f"{name}_backward")(device_view(cp, grad_y, 1), y)
    assert_close(grad_x, getattr(R, f"{name}_backward")(grad_y, cp.asnumpy(y)), elementwise=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_in_place(cp, rng, name):
    x = rng.standard_normal(4099).astype(np.float32)
    data = device_view(cp, x, 1)
    assert getattr(F, name)(data, out=data) is data
    assert_close(data, getattr(R, name)(x), elementwise=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_nan_propagates_like_the_reference(cp, rng, name):
    x = rng.standard_normal(1031).astype(np.float32)
    x[[0, 3, 500, 1030]] = np.nan
    y = cp.asnumpy(getattr(F, name)(cp.asarray(x)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(getattr(R, name)(x)))
    grad_y = rng.standard_normal(1031).astype(np.float32)
    grad_y[7] = np.nan
    y_saved = np.abs(rng.standard_normal(1031)).astype(np.float32)
    y_saved[[9, 11]] = np.nan
    got = cp.asnumpy(getattr(F, f"{name}_backward")(cp.asarray(grad_y), cp.asarray(y_saved)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(getattr(R, f"{name}_backward")(grad_y, y_saved)))


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu_through_the_launchers():
    """The same launcher calls on the GPU and on the harness (same grids): outputs must agree."""
    def calls(executor):
        rng = np.random.default_rng(7)
        x, g = (executor.xp.asarray(random_array(rng, shape)) for shape in ((1031,), (1031,)))
        return (cuda_elementwise.tanh_forward(x, executor=executor),
                cuda_elementwise.sigmoid_backward(g, x, executor=executor))

    assert len(harness.cross_check(calls)) == 2


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
@property_test()
def test_activation_matches_reference(backend, name, data):
    rng, dtype, _ = data.draw(common(backend))
    shape = data.draw(shapes)
    x = random_array(rng, shape, dtype, scale=data.draw(st.sampled_from([1.0, 10.0])))
    in_place = data.draw(st.booleans())
    xb = backend.put(x.copy())
    y = getattr(F, name)(xb, out=xb if in_place else None)
    assert y.shape == shape and y.dtype == dtype
    if in_place:
        assert y is xb
    assert_close(y, getattr(R, name)(x), dtype=dtype, elementwise=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
@property_test()
def test_activation_backward_matches_reference(backend, name, data):
    rng, dtype, _ = data.draw(common(backend))
    shape = data.draw(shapes)
    y = getattr(R, name)(random_array(rng, shape, dtype)).astype(dtype)  # a real forward output
    grad_y = random_array(rng, shape, dtype)
    got = getattr(F, f"{name}_backward")(backend.put(grad_y), backend.put(y))
    assert_close(got, getattr(R, f"{name}_backward")(grad_y, y), dtype=dtype, elementwise=True)


@INVALID_OK
@pytest.mark.parametrize("name", ACTIVATIONS)
@property_test()
def test_activation_specials_match_reference(backend, name, data):
    rng, dtype, _ = data.draw(common(backend))
    shape = data.draw(shapes)
    x = with_specials(rng, shape, dtype, data.draw(st.integers(1, 4)))
    assert_same_specials(getattr(F, name)(backend.put(x)), getattr(R, name)(x), dtype=dtype, elementwise=True)
    y = getattr(R, name)(x).astype(dtype)
    grad_y = with_specials(rng, shape, dtype, data.draw(st.integers(0, 2)))
    got = getattr(F, f"{name}_backward")(backend.put(grad_y), backend.put(y))
    assert_same_specials(got, getattr(R, f"{name}_backward")(grad_y, y), dtype=dtype, elementwise=True)
