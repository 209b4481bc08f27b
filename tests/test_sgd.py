"""The sgd stem (kernels/sgd.cu): one fused SGD step in place, PyTorch's rule.

Everything about it, executor by executor: the float64 reference against
steps worked out by hand and against PyTorch; every check and bad input of dlgpu/cases/sgd.py
on the CPU backend, on the CPU harness and on a GPU; the CPU backend over
several steps; the kernels on the harness (plain and sanitized); the kernels
on a GPU at odd, misaligned and 2^26+ sizes; bad input; and properties.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases import sgd as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cuda import sgd as cuda_sgd
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close, random_array, same_bits
from dlgpu.testing.gpu import device_view
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.properties import INVALID_OK, assert_same_specials, common, property_test, shapes, with_specials
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]
LARGE = 2**26 + 3


# ---------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------


SGD_GRADS = [np.array([0.5, -1.0]), np.array([0.25, 0.5]), np.array([-0.5, 2.0])]


def test_sgd_step_three_steps_unrolled_by_hand():
    lr, momentum, weight_decay = 0.1, 0.9, 0.01
    param = np.array([1.0, -2.0])
    velocity = np.zeros(2)
    for grad in SGD_GRADS:
        assert R.sgd_step(param, grad, velocity, lr=lr, momentum=momentum, weight_decay=weight_decay) is None
    # Element 0, step by step (d = grad + wd * p; v = 0.9 v + d; p -= 0.1 v):
    #   d = 0.51,          v = 0.51,        p = 0.949
    #   d = 0.25949,       v = 0.71849,     p = 0.877151
    #   d = -0.49122849,   v = 0.15541251,  p = 0.861609749
    # Element 1:
    #   d = -1.02,         v = -1.02,       p = -1.898
    #   d = 0.48102,       v = -0.43698,    p = -1.854302
    #   d = 1.98145698,    v = 1.58817498,  p = -2.013119498
    np.testing.assert_allclose(param, [0.861609749, -2.013119498], rtol=1e-14)
    np.testing.assert_allclose(velocity, [0.15541251, 1.58817498], rtol=1e-14)


def test_sgd_step_without_momentum_and_in_the_callers_dtype():
    param = np.array([1.0, -2.0], dtype=np.float32)
    R.sgd_step(param, np.array([0.5, -1.0], dtype=np.float32), None, lr=0.5, weight_decay=0.1)
    assert param.dtype == np.float32
    # p - lr * (g + wd p) = [1 - 0.5*0.6, -2 - 0.5*(-1.2)] = [0.7, -1.4]
    np.testing.assert_array_equal(param, np.array([0.7, -1.4], dtype=np.float32))
    with pytest.raises(ArgumentError, match="velocity"):
        R.sgd_step(param, param.copy(), None, lr=0.1, momentum=0.9)


def test_sgd_step_matches_torch():
    torch = pytest.importorskip("torch")
    lr, momentum, weight_decay = 0.1, 0.9, 0.01
    param = np.array([1.0, -2.0])
    velocity = np.zeros(2)
    weight = torch.tensor(param.copy(), requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=lr, momentum=momentum, weight_decay=weight_decay)
    for grad in SGD_GRADS:
        R.sgd_step(param, grad, velocity, lr=lr, momentum=momentum, weight_decay=weight_decay)
        weight.grad = torch.tensor(grad)
        optimizer.step()
    np.testing.assert_allclose(param, weight.detach().numpy(), rtol=1e-14)


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/sgd.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 1e-2), (0.9, 0.0), (0.9, 5e-4)])
def test_sgd_step_on_the_cpu_over_three_steps(rng, dtype, momentum, weight_decay):
    for shape in [(1,), (13, 7), (6, 1, 5, 5)]:
        param = random_array(rng, shape, dtype)
        grad = random_array(rng, shape, dtype)
        velocity = random_array(rng, shape, dtype) if momentum else None
        ref_param = param.copy()
        ref_velocity = None if velocity is None else velocity.copy()
        for _ in range(3):  # velocity carries over between steps
            assert F.sgd_step(param, grad, velocity, lr=0.1, momentum=momentum, weight_decay=weight_decay) is None
            R.sgd_step(ref_param, grad, ref_velocity, lr=0.1, momentum=momentum, weight_decay=weight_decay)
        assert param.dtype == dtype
        assert_close(param, ref_param, dtype=dtype, elementwise=True)
        if momentum:
            assert_close(velocity, ref_velocity, dtype=dtype, elementwise=True)


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


def check_sgd(executor, rng):
    for n in (1, 37, 5003):
        for momentum, weight_decay in ((0.9, 0.01), (0.0, 0.1)):
            param, grad = random_array(rng, n), random_array(rng, n)
            velocity = random_array(rng, n) if momentum else None
            expected_param = param.copy()
            expected_velocity = None if velocity is None else velocity.copy()
            R.sgd_step(expected_param, grad, expected_velocity, lr=0.1, momentum=momentum, weight_decay=weight_decay)
            cuda_sgd.sgd_step(param, grad, velocity, 0.1, momentum, weight_decay, executor=executor)
            assert_close(param, expected_param, elementwise=True)
            if velocity is not None:
                assert_close(velocity, expected_velocity, elementwise=True)


def check_sgd_16bit(executor, rng):
    """16-bit params: the 16-bit state alone, and fp32 master weights (velocity float32) with a loss scale;
    param is then the master copy rounded, bit for bit."""
    n = 2011  # head, chunks and tail with one SM, several grid trips
    for dtype in STORAGE_DTYPES:
        for momentum, master in ((0.9, False), (0.9, True), (0.0, True), (0.0, False)):
            param, grad = random_array(rng, n, dtype), random_array(rng, n, dtype)
            velocity = random_array(rng, n, np.float32 if master else dtype) if momentum else None
            weights = param.astype(np.float32) if master else None
            scale = 64.0 if master else 1.0
            ref = [param.astype(np.float64), None if velocity is None else velocity.astype(np.float64),
                   None if weights is None else weights.astype(np.float64)]
            R.sgd_step(ref[0], grad, ref[1], lr=0.1, momentum=momentum, weight_decay=0.01, master=ref[2],
                       grad_scale=scale)
            cuda_sgd.sgd_step(param, grad, velocity, 0.1, momentum, 0.01, weights, scale, executor=executor)
            assert param.dtype == dtype
            assert_close(param, ref[0], dtype=dtype)
            if velocity is not None:
                assert_close(velocity, ref[1], dtype=dtype)
            if master:
                assert_close(weights, ref[2], dtype=np.float32, elementwise=True)
                assert same_bits(param, weights.astype(dtype))


KERNEL_CASES = (
    KernelCase("sgd", "sgd", ("sgd_momentum_f32", "sgd_plain_f32"), check_sgd),
    KernelCase("sgd_16bit", "sgd", tuple(f"sgd_{kind}_{suffix}" for suffix in ("bf16", "fp16")
                                         for kind in ("momentum", "plain", "master_momentum", "master_plain")),
               check_sgd_16bit),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("sgd", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("n", (1, 3, 7, 64, 1021, 65537))
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-2)])
def test_sgd_step_on_the_gpu(cp, rng, n, offset, momentum, weight_decay):
    param, grad, velocity = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    expected_param, expected_velocity = param.copy(), velocity.copy()
    R.sgd_step(expected_param, grad, expected_velocity if momentum else None,
               lr=0.05, momentum=momentum, weight_decay=weight_decay)
    d_param, d_grad, d_velocity = (device_view(cp, a, offset) for a in (param, grad, velocity))
    F.sgd_step(d_param, d_grad, d_velocity if momentum else None, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    assert_close(d_param, expected_param, elementwise=True)
    if momentum:
        assert_close(d_velocity, expected_velocity, elementwise=True)
    else:
        np.testing.assert_array_equal(cp.asnumpy(d_velocity), velocity)  # untouched without momentum


@pytest.mark.gpu
def test_sgd_step_on_the_gpu_large(cp, rng):
    param, grad, velocity = (rng.standard_normal(LARGE).astype(np.float32) for _ in range(3))
    expected_param, expected_velocity = param.copy(), velocity.copy()
    R.sgd_step(expected_param, grad, expected_velocity, lr=0.01, momentum=0.9, weight_decay=1e-4)
    d_param, d_grad, d_velocity = (device_view(cp, a, 1) for a in (param, grad, velocity))
    F.sgd_step(d_param, d_grad, d_velocity, lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert_close(d_param, expected_param, elementwise=True)
    assert_close(d_velocity, expected_velocity, elementwise=True)


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@property_test()
def test_sgd_step_matches_reference(backend, data):
    rng, dtype, _ = data.draw(common(backend))
    shape = data.draw(shapes)
    lr = data.draw(st.floats(0.0, 1.0))
    momentum = data.draw(st.sampled_from([0.0, 0.5, 0.9]))
    weight_decay = data.draw(st.sampled_from([0.0, 1e-4, 0.1]))
    param, grad = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    velocity = random_array(rng, shape, dtype) if momentum or data.draw(st.booleans()) else None
    ref_param, ref_velocity = param.copy(), None if velocity is None else velocity.copy()
    R.sgd_step(ref_param, grad, ref_velocity, lr=lr, momentum=momentum, weight_decay=weight_decay)
    p, v = backend.put(param), backend.put(velocity)
    assert F.sgd_step(p, backend.put(grad), v, lr=lr, momentum=momentum, weight_decay=weight_decay) is None
    assert_close(p, ref_param, dtype=dtype, elementwise=True)
    if velocity is not None:
        assert_close(v, ref_velocity, dtype=dtype, elementwise=True)


@INVALID_OK
@property_test()
def test_sgd_step_specials_match_reference(backend, data):
    rng, dtype, _ = data.draw(common(backend))
    shape = data.draw(shapes)
    param = random_array(rng, shape, dtype)
    grad = with_specials(rng, shape, dtype, data.draw(st.integers(1, 3)))
    velocity = random_array(rng, shape, dtype)
    ref_param, ref_velocity = param.copy(), velocity.copy()
    R.sgd_step(ref_param, grad, ref_velocity, lr=0.1, momentum=0.9, weight_decay=0.01)
    p, v = backend.put(param), backend.put(velocity)
    F.sgd_step(p, backend.put(grad), v, lr=0.1, momentum=0.9, weight_decay=0.01)
    assert_same_specials(p, ref_param, dtype=dtype, elementwise=True)
    assert_same_specials(v, ref_velocity, dtype=dtype, elementwise=True)
