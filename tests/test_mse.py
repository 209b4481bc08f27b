"""The mse stem (kernels/mse.cu): the squared error of the review's Figure 1, and its gradient.

Everything about it, executor by executor: the float64 reference by hand,
against PyTorch's definition and against finite differences; every check and
bad input of dlgpu/cases/mse.py on the CPU backend, on the CPU harness and on a
GPU; the CPU backend in float32 and float64, deterministic; the kernels on the
harness in float32, bfloat16 and float16 (several blocks of partial sums,
misaligned views for the vector driver, plain and sanitized); the kernels on a
GPU at odd sizes, with a NaN; and the layer nn.SquaredError.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu import nn
from dlgpu.cases import mse as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.precision import BFLOAT16
from dlgpu.cuda import mse as cuda_mse
from dlgpu.testing import assert_close, check_gradients, harness, random_array, same_bits
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------


def test_squared_error_by_hand():
    # Two examples of two outputs: errors (1, -2) and (0, 3): 0.5 * (1 + 4 + 0 + 9) / 2 = 3.5.
    y = np.array([[1.0, 0.0], [2.0, 3.0]])
    t = np.array([[0.0, 2.0], [2.0, 0.0]])
    loss = R.mse_loss(y, t)
    assert loss.shape == () and loss.dtype == np.float64 and float(loss) == 3.5
    np.testing.assert_array_equal(R.mse_loss_backward(y, t), [[0.5, -1.0], [0.0, 1.5]])
    # Figure 1: one output unit, dE/dy = y - t for one example.
    np.testing.assert_array_equal(R.mse_loss_backward(np.array([[0.8]]), np.array([[1.0]])), [[0.8 - 1.0]])


def test_squared_error_against_pytorchs_definition(rng):
    torch = pytest.importorskip("torch")
    y, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    # PyTorch's MSELoss is the mean over every element of (y - t)^2: ours is 0.5 * outputs-per-row times it.
    theirs = torch.nn.functional.mse_loss(torch.from_numpy(y), torch.from_numpy(t)).item()
    assert float(R.mse_loss(y, t)) == pytest.approx(0.5 * 4 * theirs, rel=1e-14)


@pytest.mark.parametrize("shape", [(3,), (4, 1), (3, 5), (2, 3, 2)])
def test_squared_error_backward_matches_finite_differences(rng, shape):
    y, t = rng.standard_normal(shape), rng.standard_normal(shape)
    check_gradients(lambda: R.mse_loss(y, t), {"y": y}, {"y": R.mse_loss_backward(y, t)}, np.ones(()))


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/mse.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (17,), (5, 1), (33, 7), (4, 3, 5)])
def test_squared_error_on_the_cpu(rng, dtype, shape):
    y, t = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    loss = F.mse_loss(y, t)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss, R.mse_loss(y, t), dtype=dtype)
    grad = F.mse_loss_backward(y, t)
    assert grad.dtype == dtype and grad.shape == shape
    assert_close(grad, R.mse_loss_backward(y, t), dtype=dtype, elementwise=True)
    assert same_bits(loss, F.mse_loss(y, t)) and same_bits(grad, F.mse_loss_backward(y, t))
    # a strided view is copied once, never read as if contiguous
    view = np.asfortranarray(y) if y.ndim > 1 else y[::-1].copy()[::-1]
    assert_close(F.mse_loss(view, t), R.mse_loss(y, t), dtype=dtype)


def test_a_nan_reaches_the_loss():
    y = np.zeros((3, 2), np.float32)
    y[1, 0] = np.nan
    assert np.isnan(F.mse_loss(y, np.zeros_like(y)))


# ---------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------


def test_the_squared_error_layer_keeps_what_backward_needs(rng):
    y, t = random_array(rng, (8, 3)), random_array(rng, (8, 3))
    loss_fn = nn.SquaredError()
    loss = loss_fn(y, t)
    assert_close(loss, R.mse_loss(y, t))
    assert_close(loss_fn.backward(), R.mse_loss_backward(y, t), elementwise=True)


def test_a_network_learns_with_the_squared_error(rng):
    from dlgpu import optim

    model = nn.Sequential(nn.Linear(2, 8, rng=rng), nn.Tanh(), nn.Linear(8, 1, rng=rng))
    x = random_array(rng, (32, 2))
    t = (x[:, :1] * x[:, 1:]).astype(np.float32)  # a product: no linear model fits it
    loss_fn, opt = nn.SquaredError(), optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    first = float(loss_fn(model(x), t))
    for _ in range(300):
        opt.zero_grad()
        loss_fn(model(x), t)
        model.backward(loss_fn.backward())
        opt.step()
    assert float(loss_fn(model(x), t)) < 0.1 * first


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


def check_mse(executor, rng):
    # 1021 x 33 elements on one SM: every block of partial sums loops several times; the offset
    # views start 4 bytes past a 16-byte boundary, so the vector driver runs its scalar head.
    shapes = ((1,), (5, 3), (1021, 33)) if executor.mode == "plain" else ((5, 3), (67, 9))
    for shape in shapes:
        y, t = random_array(rng, shape), random_array(rng, shape)
        assert_close(cuda_mse.mse_loss(y, t, executor=executor), R.mse_loss(y, t))
        assert_close(cuda_mse.mse_loss_backward(y, t, executor=executor), R.mse_loss_backward(y, t),
                     elementwise=True)
    flat_y, flat_t = random_array(rng, (70,)), random_array(rng, (70,))
    y, t = flat_y[1:], flat_t[1:]
    assert_close(cuda_mse.mse_loss(y, t, executor=executor), R.mse_loss(y, t))
    assert_close(cuda_mse.mse_loss_backward(y, t, executor=executor), R.mse_loss_backward(y, t), elementwise=True)


def check_mse_16bit(executor, rng):
    """bfloat16 and float16: a float32 loss, the gradient in the inputs' dtype; views offset by one element
    (2 bytes: the vector driver's scalar head) and by eight (16 bytes: vectors from the first element).
    Sanitized: bfloat16 only (float16's kernels are the same template), and the offset-by-one view."""
    plain = executor.mode == "plain"
    shape = (1021, 33) if plain else (67, 9)
    for dtype in STORAGE_DTYPES if plain else (BFLOAT16,):
        y, t = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
        loss = cuda_mse.mse_loss(y, t, executor=executor)
        grad = cuda_mse.mse_loss_backward(y, t, executor=executor)
        assert loss.dtype == np.float32 and grad.dtype == dtype
        assert_close(loss, R.mse_loss(y, t), dtype=dtype)
        assert_close(grad, R.mse_loss_backward(y, t), dtype=dtype, elementwise=True)
        flat_y, flat_t = random_array(rng, (90,), dtype), random_array(rng, (90,), dtype)
        for offset in (1, 8) if plain else (1,):
            y, t = flat_y[offset:], flat_t[offset:]
            assert_close(cuda_mse.mse_loss(y, t, executor=executor), R.mse_loss(y, t), dtype=dtype)
            assert_close(cuda_mse.mse_loss_backward(y, t, executor=executor), R.mse_loss_backward(y, t),
                         dtype=dtype, elementwise=True)


def mse_16bit_kernels(suffixes) -> tuple[str, ...]:
    return tuple(f"mse_loss_{kernel}_{suffix}" for suffix in suffixes for kernel in ("partial", "backward"))


KERNEL_CASES = (
    KernelCase("mse", "mse", ("mse_loss_partial_f32", "mse_loss_finish_f32", "mse_loss_backward_f32"), check_mse),
    KernelCase("mse_16bit", "mse", mse_16bit_kernels(("bf16",)), check_mse_16bit),
    KernelCase("mse_16bit_every_instance", "mse", mse_16bit_kernels(("bf16", "fp16")), check_mse_16bit,
               modes=("plain",)),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("mse", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1), (31, 33), (1000, 1000), (65537, 3)])
def test_squared_error_on_the_gpu(cp, rng, poison, shape):
    y, t = random_array(rng, shape), random_array(rng, shape)
    d_y, d_t = cp.asarray(y), cp.asarray(t)
    loss = cuda_mse.mse_loss(d_y, d_t, executor=poison)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, R.mse_loss(y, t))
    assert same_bits(loss, cuda_mse.mse_loss(d_y, d_t, executor=poison))
    assert_close(cuda_mse.mse_loss_backward(d_y, d_t, executor=poison), R.mse_loss_backward(y, t),
                 elementwise=True)
    assert_close(F.mse_loss(d_y, d_t), R.mse_loss(y, t))


@pytest.mark.gpu
def test_a_nan_reaches_the_loss_on_the_gpu(cp):
    y = cp.zeros((300, 7), dtype=cp.float32)
    y[123, 4] = cp.nan
    assert np.isnan(float(F.mse_loss(y, cp.zeros_like(y))))


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu_through_the_launchers():
    def calls(executor):
        rng = np.random.default_rng(3)
        y = executor.xp.asarray(random_array(rng, (257, 5)))
        t = executor.xp.asarray(random_array(rng, (257, 5)))
        return cuda_mse.mse_loss(y, t, executor=executor), cuda_mse.mse_loss_backward(y, t, executor=executor)

    assert len(harness.cross_check(calls)) == 2
