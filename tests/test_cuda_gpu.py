"""The CUDA backend's memory-bound kernels against dlgpu.reference, on a GPU.

Every test is marked ``gpu`` and skips where CuPy or a device is missing.  Inputs are
fresh random data; outputs are poisoned (NaN, or -7 for int32) before each launch, so an
element a kernel forgets to write fails the comparison.  Sizes: 1, primes, 2^k +- 1,
views offset by one element (the misaligned path of the float4 kernels) and, for the
elementwise family, more than 2^26 elements (64-bit indexing, many grid-stride trips).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.testing import assert_close

pytestmark = pytest.mark.gpu

ELEMENTWISE_SIZES = (1, 2, 3, 5, 7, 13, 31, 33, 63, 64, 65, 127, 129, 1021, 4097, 65537)
LARGE = 2**26 + 3
ACTIVATIONS = ("relu", "tanh", "sigmoid")


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


class PoisonExecutor:
    """The default executor, except that outputs the launchers allocate start as NaN (-7 for ints)."""

    def __init__(self, cupy):
        from dlgpu.cuda.executor import default_executor

        self._inner = default_executor()

        def empty(shape, dtype=np.float32):
            dtype = np.dtype(dtype)
            return cupy.full(shape, np.nan if dtype.kind == "f" else -7, dtype=dtype)

        self.xp = types.SimpleNamespace(empty=empty, cuda=cupy.cuda)

    def launch(self, launch):
        self._inner.launch(launch)


@pytest.fixture(scope="module")
def poison(cp):
    return PoisonExecutor(cp)


def device_view(cp, host: np.ndarray, offset: int):
    """A copy of ``host`` on the GPU, starting ``offset`` elements into its own buffer."""
    flat = cp.empty(host.size + offset, dtype=host.dtype)
    view = flat[offset:].reshape(host.shape)
    view[...] = cp.asarray(host)
    return view


def poisoned(cp, shape, offset: int = 0, dtype=np.float32):
    flat = cp.full(int(np.prod(shape)) + offset, np.nan, dtype=dtype)
    return flat[offset:].reshape(shape)


# ---------------------------------------------------------------- elementwise


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("n", ELEMENTWISE_SIZES)
@pytest.mark.parametrize("x_offset,out_offset", [(0, 0), (1, 1), (1, 0), (0, 3), (2, 2)])
def test_activation_forward_and_backward(cp, rng, name, n, x_offset, out_offset):
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


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_large_misaligned(cp, rng, name):
    x = rng.standard_normal(LARGE).astype(np.float32) * 3
    out = poisoned(cp, (LARGE,), 1)
    y = getattr(F, name)(device_view(cp, x, 1), out=out)
    assert_close(y, getattr(R, name)(x), elementwise=True)
    grad_y = rng.standard_normal(LARGE).astype(np.float32)
    grad_x = getattr(F, f"{name}_backward")(device_view(cp, grad_y, 1), y)
    assert_close(grad_x, getattr(R, f"{name}_backward")(grad_y, cp.asnumpy(y)), elementwise=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_in_place(cp, rng, name):
    x = rng.standard_normal(4099).astype(np.float32)
    data = device_view(cp, x, 1)
    assert getattr(F, name)(data, out=data) is data
    assert_close(data, getattr(R, name)(x), elementwise=True)


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


# ---------------------------------------------------------------- sgd


@pytest.mark.parametrize("n", (1, 3, 7, 64, 1021, 65537))
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-2)])
def test_sgd_step(cp, rng, n, offset, momentum, weight_decay):
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


def test_sgd_step_large(cp, rng):
    param, grad, velocity = (rng.standard_normal(LARGE).astype(np.float32) for _ in range(3))
    expected_param, expected_velocity = param.copy(), velocity.copy()
    R.sgd_step(expected_param, grad, expected_velocity, lr=0.01, momentum=0.9, weight_decay=1e-4)
    d_param, d_grad, d_velocity = (device_view(cp, a, 1) for a in (param, grad, velocity))
    F.sgd_step(d_param, d_grad, d_velocity, lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert_close(d_param, expected_param, elementwise=True)
    assert_close(d_velocity, expected_velocity, elementwise=True)


# ---------------------------------------------------------------- bias gradient

BIAS_SHAPES = [(1, 1), (3, 5), (7, 129), (33, 1000), (1031, 3), (4097, 10), (2, 3, 5, 5), (5, 7, 1, 1),
               (3, 2, 7, 9), (65, 3, 4, 4), (8, 64, 56, 56), (2**16, 2**10)]


def bias_reference(grad_y: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    g = grad_y.astype(np.float64)
    if y is not None:
        g = np.where(y > 0, g, 0.0)
    return g.sum(axis=(0, *range(2, g.ndim)))


@pytest.mark.parametrize("shape", BIAS_SHAPES)
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("masked", (False, True))
def test_bias_grad(cp, rng, poison, shape, offset, masked):
    from dlgpu.cuda.bias_grad import bias_grad

    grad_y = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32) if masked else None
    d_grad_y = device_view(cp, grad_y, offset)
    d_y = None if y is None else device_view(cp, y, offset)
    got = bias_grad(d_grad_y, d_y, executor=poison)
    assert_close(got, bias_reference(grad_y, y))
    again = bias_grad(d_grad_y, d_y, executor=poison)
    np.testing.assert_array_equal(cp.asnumpy(again), cp.asnumpy(got))  # deterministic: same bits


# ---------------------------------------------------------------- softmax cross-entropy

SOFTMAX_SHAPES = [(1, 1), (1, 7), (3, 31), (5, 32), (7, 33), (64, 1000), (13, 1024), (5, 1025), (3, 4099),
                  (2, 10007), (65537, 10)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("label_dtype", (np.int32, np.int64))
def test_softmax_cross_entropy(cp, rng, poison, shape, label_dtype):
    from dlgpu.cuda.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

    logits = (rng.standard_normal(shape) * 4).astype(np.float32)
    labels = rng.integers(0, shape[1], shape[0]).astype(label_dtype)
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    d_logits, d_labels = cp.asarray(logits), cp.asarray(labels)

    loss, probs = softmax_cross_entropy(d_logits, d_labels, executor=poison)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, loss_ref)
    assert_close(probs, probs_ref)
    grad = softmax_cross_entropy_backward(probs, d_labels, executor=poison)
    assert_close(grad, R.softmax_cross_entropy_backward(cp.asnumpy(probs), labels))

    public_loss, public_probs = F.softmax_cross_entropy(d_logits, d_labels)
    assert_close(public_loss, loss_ref)
    assert_close(F.softmax_cross_entropy_backward(public_probs, d_labels),
                 R.softmax_cross_entropy_backward(cp.asnumpy(public_probs), labels))


@pytest.mark.parametrize("classes", (10, 1000, 5000))
def test_softmax_cross_entropy_is_stable_at_1e4(cp, rng, classes):
    logits = (rng.standard_normal((17, classes)) * 1e4).astype(np.float32)
    labels = rng.integers(0, classes, 17).astype(np.int32)
    loss, probs = F.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    assert np.isfinite(float(loss))
    assert_close(loss, loss_ref)
    assert_close(probs, probs_ref)


@pytest.mark.parametrize("classes", (10, 5000))
def test_softmax_cross_entropy_nan_row(cp, rng, classes):
    logits = rng.standard_normal((4, classes)).astype(np.float32)
    logits[2, 3] = np.nan
    labels = np.zeros(4, dtype=np.int64)
    loss, probs = F.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    assert np.isnan(float(loss)) and np.isnan(float(loss_ref))
    np.testing.assert_array_equal(np.isnan(cp.asnumpy(probs)), np.isnan(probs_ref))


@pytest.mark.parametrize("classes", (10, 5000))
def test_softmax_kernels_guard_out_of_range_labels(cp, rng, poison, classes):
    """Below dlgpu.functional's check: a bad label gives NaN for its row, never a wild read."""
    from dlgpu.cuda.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

    logits = cp.asarray(rng.standard_normal((4, classes)).astype(np.float32))
    labels = cp.asarray(np.array([0, classes, -1, 2**40], dtype=np.int64))
    loss, probs = softmax_cross_entropy(logits, labels, executor=poison)
    assert np.isnan(float(loss))
    assert np.isfinite(cp.asnumpy(probs)).all()
    grad = cp.asnumpy(softmax_cross_entropy_backward(probs, labels, executor=poison))
    assert np.isfinite(grad[0]).all() and np.isnan(grad[1:]).all()


# ---------------------------------------------------------------- max pooling

POOL_CASES = [
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((2, 3, 7, 5), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 9, 9), (3, 2), (1, 1), (1, 0)),
    ((2, 2, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((1, 1, 13, 11), (5, 5), (3, 2), (2, 2)),
    ((3, 1, 6, 7), (4, 3), (1, 2), (2, 1)),
    ((5, 3, 31, 33), (3, 3), (2, 2), (1, 1)),
    ((8, 16, 56, 56), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("shape,kernel,stride,padding", POOL_CASES)
def test_max_pool2d(cp, rng, poison, shape, kernel, stride, padding):
    from dlgpu.cuda.pool import max_pool2d, max_pool2d_backward

    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = x.reshape(-1)[-1]  # ties: the first in the window must win
    y_ref, argmax_ref = R.max_pool2d(x, kernel, stride=stride, padding=padding)
    y, argmax = max_pool2d(cp.asarray(x), kernel, stride, padding, executor=poison)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(cp.asnumpy(argmax), argmax_ref)
    assert_close(y, y_ref, elementwise=True)

    grad_y = rng.standard_normal(y_ref.shape).astype(np.float32)
    grad_ref = R.max_pool2d_backward(grad_y, argmax_ref, shape)
    d_grad_y = cp.asarray(grad_y)
    gathered = max_pool2d_backward(d_grad_y, argmax, shape, (kernel, stride, padding), executor=poison)
    assert_close(gathered, grad_ref)
    walked = max_pool2d_backward(d_grad_y, argmax, shape, executor=poison)
    assert_close(walked, grad_ref)
    np.testing.assert_array_equal(
        cp.asnumpy(max_pool2d_backward(d_grad_y, argmax, shape, executor=poison)), cp.asnumpy(walked)
    )

    public_y, public_argmax = F.max_pool2d(cp.asarray(x), kernel, stride=stride, padding=padding)
    np.testing.assert_array_equal(cp.asnumpy(public_argmax), argmax_ref)
    assert_close(F.max_pool2d_backward(d_grad_y, public_argmax, shape), grad_ref)


def test_max_pool2d_nan_rule(cp, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    x[1, 2, 4, 4] = np.nan
    x[1, 2, 4, 6] = np.nan
    y, argmax = F.max_pool2d(cp.asarray(x), 3, stride=1, padding=1)
    y_ref, argmax_ref = R.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(np.isnan(cp.asnumpy(y)), np.isnan(y_ref))
    np.testing.assert_array_equal(cp.asnumpy(argmax), argmax_ref)
