"""The CPU backend (dlgpu.cpu) against the float64 reference, op by op, forward and backward.

Every op runs through dlgpu.functional on NumPy arrays (so on dlgpu.cpu), in
float32 and float64, on odd shapes; outputs that take ``out=`` are poisoned
with NaN first so an unwritten element fails.  Tensor-core precisions are
emulated on the CPU by rounding operands: those results must be within their
tolerance AND measurably worse than "ieee", or the rounding is not applied.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu.cpu as cpu
import dlgpu.cpu.winograd as cpu_winograd
import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cpu.gemm import round_operand
from dlgpu.testing import assert_close, random_array, rel_error

DTYPES = [np.float32, np.float64]


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_backend_interface():
    assert cpu.FLOAT_DTYPES == (np.float32, np.float64)
    for name in (
        "matmul matmul_backward linear linear_backward conv2d conv2d_backward relu tanh sigmoid "
        "relu_backward tanh_backward sigmoid_backward max_pool2d max_pool2d_backward "
        "softmax_cross_entropy softmax_cross_entropy_backward sgd_step"
    ).split():
        assert callable(getattr(cpu, name)), name


# ---------------------------------------------------------------------------
# matmul and linear
# ---------------------------------------------------------------------------

MATMUL_SHAPES = [(1, 1, 1), (7, 13, 5), (64, 3, 65), (33, 67, 2)]  # (m, k, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_forward_backward(rng, dtype, transpose_a, transpose_b):
    for m, k, n in MATMUL_SHAPES:
        a = random_array(rng, (k, m) if transpose_a else (m, k), dtype)
        b = random_array(rng, (n, k) if transpose_b else (k, n), dtype)
        flags = dict(transpose_a=transpose_a, transpose_b=transpose_b)
        out = poisoned((m, n), dtype)
        c = F.matmul(a, b, out=out, **flags)
        assert c is out and c.dtype == dtype
        assert_close(c, R.matmul(a, b, **flags), dtype=dtype)

        grad_c = random_array(rng, (m, n), dtype)
        grad_a, grad_b = F.matmul_backward(grad_c, a, b, **flags)
        ref_a, ref_b = R.matmul_backward(grad_c, a, b, **flags)
        assert grad_a.shape == a.shape and grad_b.shape == b.shape
        assert grad_a.dtype == dtype and grad_b.dtype == dtype
        assert_close(grad_a, ref_a, dtype=dtype)
        assert_close(grad_b, ref_b, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_backward(rng, dtype, activation, with_bias):
    for batch, fan_in, fan_out in [(1, 1, 1), (5, 13, 7), (67, 31, 65)]:
        x = random_array(rng, (batch, fan_in), dtype)
        w = random_array(rng, (fan_out, fan_in), dtype)
        bias = random_array(rng, (fan_out,), dtype) if with_bias else None
        out = poisoned((batch, fan_out), dtype)
        y = F.linear(x, w, bias, activation=activation, out=out)
        y_ref = R.linear(x, w, bias, activation=activation)
        assert y is out
        assert_close(y, y_ref, dtype=dtype)

        grad_y = random_array(rng, y.shape, dtype)
        grads = F.linear_backward(grad_y, x, w, y=y, activation=activation)
        refs = R.linear_backward(grad_y, x, w, y=y_ref, activation=activation)
        for got, ref, like in zip(grads, refs, (x, w, w[:, 0])):
            assert got.shape == like.shape and got.dtype == dtype
            assert_close(got, ref, dtype=dtype)


def test_linear_relu_mask_is_applied(rng):
    x = random_array(rng, (9, 4), np.float32)
    w = random_array(rng, (6, 4), np.float32)
    y = F.linear(x, w, activation="relu")
    assert (y == 0).any() and (y > 0).any()
    grad_x, grad_w, grad_b = F.linear_backward(np.ones_like(y), x, w, y=y, activation="relu")
    np.testing.assert_allclose(grad_b, (y > 0).sum(axis=0), rtol=0)
    again = F.linear_backward(np.ones_like(y), x, w, y=y, activation="relu")
    assert all(same_bits(a, b) for a, b in zip((grad_x, grad_w, grad_b), again))


# ---------------------------------------------------------------------------
# tensor-core precision emulation
# ---------------------------------------------------------------------------


def test_round_operand_is_round_to_nearest_even():
    one = np.float32(1.0)
    tie_down = one + np.float32(2.0**-11)  # half a tf32 ulp above 1: ties to the even 1.0
    tie_up = one + np.float32(3 * 2.0**-11)  # 1.5 ulp: ties up to the even 1 + 2 ulp
    above_half = one + np.float32(2.0**-11 + 2.0**-20)
    values = np.array([tie_down, tie_up, above_half, -tie_up, np.inf, -np.inf, np.nan, 0.0], dtype=np.float32)
    tf32 = round_operand(values, "tf32")
    np.testing.assert_array_equal(tf32[:6], [1.0, 1.0 + 2.0**-9, 1.0 + 2.0**-10, -(1.0 + 2.0**-9), np.inf, -np.inf])
    assert np.isnan(tf32[6]) and tf32[7] == 0.0

    # float32's largest value lies above bf16's largest plus half an ulp: it rounds to inf.
    largest = np.finfo(np.float32).max
    bf16 = round_operand(np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, largest], dtype=np.float32), "bf16")
    np.testing.assert_array_equal(bf16, [1.0, 1.0 + 2.0**-6, np.inf])

    # TF32 and fp16 keep the same 10 mantissa bits, so inside fp16's range they agree.
    data = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(round_operand(data, "tf32"), round_operand(data, "fp16"))
    # bf16 is float32's upper half.
    assert not (round_operand(data, "bf16").view(np.uint32) & 0xFFFF).any()
    assert round_operand(data, "ieee") is data
    data64 = data.astype(np.float64)
    assert round_operand(data64, "tf32") is data64


# The largest relative error an "ieee" float32 result shows here is ~1e-7; each
# emulated precision must show at least this much more, or it was not applied.
MEASURABLE = {"tf32": 2e-5, "fp16": 2e-5, "bf16": 2e-4}


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_precision_emulation_matmul_linear_conv(rng, precision):
    a = random_array(rng, (31, 67), np.float32)
    b = random_array(rng, (67, 33), np.float32)
    ieee = F.matmul(a, b, precision="ieee")
    low = F.matmul(a, b, precision=precision)
    ref = R.matmul(a, b)
    assert_close(low, ref, dtype=np.float32, precision=precision)
    assert rel_error(low, ref) > MEASURABLE[precision] > 10 * rel_error(ieee, ref)

    grad_c = random_array(rng, ieee.shape, np.float32)
    for got, ref in zip(F.matmul_backward(grad_c, a, b, precision=precision), R.matmul_backward(grad_c, a, b)):
        assert_close(got, ref, dtype=np.float32, precision=precision)
        assert rel_error(got, ref) > MEASURABLE[precision]

    w = random_array(rng, (13, 67), np.float32)
    y = F.linear(a, w, precision=precision)
    assert_close(y, R.linear(a, w), dtype=np.float32, precision=precision)
    assert rel_error(y, R.linear(a, w)) > MEASURABLE[precision]
    for got, ref in zip(
        F.linear_backward(grad_c[:, :13].copy(), a, w, precision=precision), R.linear_backward(grad_c[:, :13], a, w)
    ):
        if ref.ndim == 2:  # grad_b is a plain sum, not a product: it stays exact
            assert_close(got, ref, dtype=np.float32, precision=precision)
            assert rel_error(got, ref) > MEASURABLE[precision]

    x = random_array(rng, (2, 5, 11, 13), np.float32)
    wc = random_array(rng, (7, 5, 3, 3), np.float32)
    yc = F.conv2d(x, wc, padding=1, precision=precision)
    assert_close(yc, R.conv2d(x, wc, padding=1), dtype=np.float32, precision=precision)
    assert rel_error(yc, R.conv2d(x, wc, padding=1)) > MEASURABLE[precision]
    gy = random_array(rng, yc.shape, np.float32)
    got = F.conv2d_backward(gy, x, wc, padding=1, precision=precision)
    ref = R.conv2d_backward(gy, x, wc, padding=1)
    for g, r in zip(got[:2], ref[:2]):
        assert_close(g, r, dtype=np.float32, precision=precision)
        assert rel_error(g, r) > MEASURABLE[precision]


def test_precision_is_ignored_for_float64(rng):
    a = random_array(rng, (9, 17), np.float64)
    b = random_array(rng, (17, 5), np.float64)
    assert same_bits(F.matmul(a, b, precision="bf16"), F.matmul(a, b, precision="ieee"))


# ---------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------

# (N, C, H, W, K, R, S, stride, padding, dilation): C=1, C=3, K=1, 1x1 and 7x7
# kernels, stride 2 and 3, dilation 2, asymmetric padding, sizes that are primes.
CONV_CASES = [
    (1, 1, 5, 5, 1, 1, 1, 1, 0, 1),
    (2, 3, 13, 11, 5, 3, 3, (2, 3), (1, 2), 1),
    (3, 2, 17, 19, 4, 3, 3, 1, (2, 1), 2),
    (1, 3, 23, 29, 2, 7, 7, 3, 3, 1),
    (2, 5, 7, 7, 7, 3, 3, 1, 1, 1),
    (1, 16, 9, 11, 8, 3, 3, 1, 0, 1),
    (5, 1, 28, 28, 6, 5, 5, 1, 0, 1),
    (2, 4, 6, 5, 3, 2, 3, 2, 1, (1, 2)),
    # Winograd F(2x2, 3x3) (as are the 3x3 stride-1 cases above): odd output sizes
    # (half-filled tiles), asymmetric padding, a 1x1 input.
    (2, 16, 9, 11, 16, 3, 3, 1, 1, 1),
    (1, 17, 5, 6, 19, 3, 3, 1, (0, 2), 1),
    (3, 16, 1, 1, 16, 3, 3, 1, 1, 1),
]
WINOGRAD_CASES = CONV_CASES[-3:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_conv2d_forward_backward(rng, dtype, case):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    x = random_array(rng, (n, c, h, w), dtype)
    weight = random_array(rng, (k, c, r, s), dtype)
    bias = random_array(rng, (k,), dtype)
    for activation, b in (("relu", bias), (None, None)):
        y_ref = R.conv2d(x, weight, b, activation=activation, **geometry)
        out = poisoned(y_ref.shape, dtype)
        y = F.conv2d(x, weight, b, activation=activation, out=out, **geometry)
        assert y is out and y.dtype == dtype
        assert_close(y, y_ref, dtype=dtype)

        grad_y = random_array(rng, y.shape, dtype)
        grads = F.conv2d_backward(grad_y, x, weight, y=y, activation=activation, **geometry)
        refs = R.conv2d_backward(grad_y, x, weight, y=y_ref, activation=activation, **geometry)
        for got, ref, like in zip(grads, refs, (x, weight, bias)):
            assert got.shape == like.shape and got.dtype == dtype
            assert_close(got, ref, dtype=dtype)


def test_winograd_dispatch():
    applies = cpu_winograd.applies
    assert all(applies((k, c, r, s), (1, 1), (1, 1), "ieee") for _, c, _, _, k, r, s, *_ in WINOGRAD_CASES)
    assert applies((8, 64, 3, 3), (1, 1), (1, 1), "ieee")
    assert not applies((64, 3, 3, 3), (1, 1), (1, 1), "ieee")  # few input channels: the direct product is faster
    assert not applies((16, 16, 3, 3), (2, 1), (1, 1), "ieee")
    assert not applies((16, 16, 3, 3), (1, 1), (1, 2), "ieee")
    assert not applies((16, 16, 5, 5), (1, 1), (1, 1), "ieee")
    # Tensor-core precisions emulate the GPU's operand rounding, so they keep im2col.
    assert not applies((16, 16, 3, 3), (1, 1), (1, 1), "tf32")


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_winograd_shapes_keep_specials_like_direct_convolution(rng, special):
    # The Winograd transforms would turn inf into NaN and spread NaN across a tile;
    # non-finite inputs take the im2col path, whose specials match the reference's.
    x = random_array(rng, (1, 16, 6, 7), np.float32)
    x[0, 3, 2, 4] = special
    weight = random_array(rng, (8, 16, 3, 3), np.float32)
    y = F.conv2d(x, weight, padding=1)
    y_ref = R.conv2d(x, weight, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(y_ref))
    finite = np.isfinite(y_ref)
    assert_close(y[finite], y_ref[finite], dtype=np.float32)
    grad_y = random_array(rng, y.shape, np.float32)
    grads = F.conv2d_backward(grad_y, x, weight, padding=1)
    refs = R.conv2d_backward(grad_y, x, weight, padding=1)
    for got, ref in zip(grads, refs):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


def test_conv2d_relu_mask_is_applied(rng):
    x = random_array(rng, (2, 3, 8, 8), np.float32)
    weight = random_array(rng, (4, 3, 3, 3), np.float32)
    y = F.conv2d(x, weight, activation="relu")
    assert (y == 0).any() and (y > 0).any()
    _, _, grad_b = F.conv2d_backward(np.ones_like(y), x, weight, y=y, activation="relu")
    np.testing.assert_allclose(grad_b, (y > 0).sum(axis=(0, 2, 3)), rtol=0)


@pytest.mark.parametrize("channels,stride", [(6, 2), (16, 1)], ids=["im2col", "winograd"])
def test_conv2d_is_deterministic(rng, channels, stride):
    x = random_array(rng, (4, channels, 15, 13), np.float32)
    weight = random_array(rng, (channels, channels, 3, 3), np.float32)
    geometry = dict(stride=stride, padding=1, activation="relu")
    y = F.conv2d(x, weight, **geometry)
    grad_y = random_array(rng, y.shape, np.float32)
    first = F.conv2d_backward(grad_y, x, weight, y=y, **geometry)
    second = F.conv2d_backward(grad_y, x, weight, y=y, **geometry)
    assert all(same_bits(a, b) for a, b in zip(first, second))
    assert same_bits(F.conv2d(x, weight, **geometry), y)


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------

ACTIVATIONS = ["relu", "tanh", "sigmoid"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_backward(rng, dtype, name):
    forward, backward = getattr(F, name), getattr(F, f"{name}_backward")
    ref_forward, ref_backward = getattr(R, name), getattr(R, f"{name}_backward")
    for shape in [(1,), (7, 13), (2, 3, 5, 67)]:
        x = random_array(rng, shape, dtype, scale=3.0)
        out = poisoned(shape, dtype)
        y = forward(x, out=out)
        assert y is out
        assert_close(y, ref_forward(x), dtype=dtype, elementwise=True)

        grad_y = random_array(rng, shape, dtype)
        out = poisoned(shape, dtype)
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
# max pooling
# ---------------------------------------------------------------------------

# (N, C, H, W, kernel, stride, padding): overlapping windows, padding, ragged edges.
POOL_CASES = [
    (1, 1, 1, 1, 1, None, 0),
    (2, 3, 13, 11, 2, None, 0),
    (3, 2, 9, 7, 3, 2, 1),
    (1, 5, 17, 19, (3, 2), (1, 2), (1, 1)),
    (2, 1, 28, 28, 5, 3, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c[:4])))
def test_max_pool2d_forward_backward(rng, dtype, case):
    n, c, h, w, kernel, stride, padding = case
    # Small integers make ties common, so the first-in-window rule is exercised.
    for x in (random_array(rng, (n, c, h, w), dtype), rng.integers(-2, 3, (n, c, h, w)).astype(dtype)):
        y, argmax = F.max_pool2d(x, kernel, stride=stride, padding=padding)
        y_ref, argmax_ref = R.max_pool2d(x, kernel, stride=stride, padding=padding)
        assert y.dtype == dtype and argmax.dtype == np.int32
        np.testing.assert_array_equal(argmax, argmax_ref)
        assert_close(y, y_ref, dtype=dtype, elementwise=True)

        grad_y = random_array(rng, y.shape, dtype)
        grad_x = F.max_pool2d_backward(grad_y, argmax, x.shape)
        assert grad_x.dtype == dtype
        assert_close(grad_x, R.max_pool2d_backward(grad_y, argmax_ref, x.shape), dtype=dtype, elementwise=True)
        assert same_bits(grad_x, F.max_pool2d_backward(grad_y, argmax, x.shape))


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
# softmax cross-entropy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_softmax_cross_entropy(rng, dtype, label_dtype):
    for rows, classes, scale in [(1, 1, 1.0), (7, 10, 1.0), (67, 13, 1e4), (3, 1000, 30.0)]:
        logits = random_array(rng, (rows, classes), dtype, scale=scale)
        labels = rng.integers(0, classes, rows).astype(label_dtype)
        loss, probs = F.softmax_cross_entropy(logits, labels)
        loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
        assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == dtype
        assert probs.dtype == dtype
        assert_close(loss, loss_ref, dtype=dtype, elementwise=True)
        assert_close(probs, probs_ref, dtype=dtype, elementwise=True)

        grad = F.softmax_cross_entropy_backward(probs, labels)
        assert grad.dtype == dtype
        assert_close(grad, R.softmax_cross_entropy_backward(probs, labels), dtype=dtype, elementwise=True)
        assert same_bits(F.softmax_cross_entropy(logits, labels)[0], loss)


def test_softmax_cross_entropy_loss_sums_in_float64():
    # 4096 rows of loss ln(2) + tiny: a float32 running sum would drift by ~1e-4 relative.
    rows = 1 << 12
    logits = np.zeros((rows, 2), dtype=np.float32)
    logits[:, 1] = np.float32(1e-3)
    labels = np.zeros(rows, dtype=np.int32)
    loss, _ = F.softmax_cross_entropy(logits, labels)
    loss_ref, _ = R.softmax_cross_entropy(logits, labels)
    assert abs(float(loss) - float(loss_ref)) <= 1e-7 * float(loss_ref)


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 1e-2), (0.9, 0.0), (0.9, 5e-4)])
def test_sgd_step(rng, dtype, momentum, weight_decay):
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
