"""The float64 reference is the oracle, so it is checked itself.

Every backward pass against central finite differences of its own forward pass
(the gradient of sum(out * g) for a random g); forward passes against numbers
worked out by hand and against plain per-element loops written independently
of the vectorized code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dlgpu.reference as R
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.testing import rel_error

FD_STEP = 1e-6
# Central differences in float64 with a 1e-6 step are good to ~1e-9 relative.
FD_TOLERANCE = 1e-7


def numeric_gradient(scalar_fn, x: np.ndarray) -> np.ndarray:
    """d scalar_fn() / d x by central differences; scalar_fn reads x, which is nudged in place."""
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + FD_STEP
        plus = scalar_fn()
        x[index] = original - FD_STEP
        minus = scalar_fn()
        x[index] = original
        grad[index] = (plus - minus) / (2 * FD_STEP)
    return grad


def check_gradients(forward, inputs: dict, analytic: dict, grad_out: np.ndarray) -> None:
    """Each analytic gradient must match the numeric gradient of sum(forward() * grad_out)."""

    def projected() -> float:
        return float(np.sum(forward() * grad_out))

    for name, grad in analytic.items():
        numeric = numeric_gradient(projected, inputs[name])
        assert grad.shape == inputs[name].shape, name
        assert grad.dtype == np.float64, name
        err = rel_error(grad, numeric)
        assert err < FD_TOLERANCE, f"grad of {name}: relative error {err:.2e}"


def assert_away_from_kink(values: np.ndarray) -> None:
    """ReLU's derivative jumps at 0: finite differences need every input well away from it."""
    assert np.min(np.abs(values)) > 1e3 * FD_STEP, "random data fell on the ReLU kink; change the seed"


# ---------------------------------------------------------------------------
# matmul and linear
# ---------------------------------------------------------------------------


def test_matmul_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[5.0, 6.0], [7.0, 8.0]])
    np.testing.assert_array_equal(R.matmul(a, b), [[19.0, 22.0], [43.0, 50.0]])
    np.testing.assert_array_equal(R.matmul(a, b, transpose_a=True), [[26.0, 30.0], [38.0, 44.0]])
    np.testing.assert_array_equal(R.matmul(a, b, transpose_b=True), [[17.0, 23.0], [39.0, 53.0]])
    np.testing.assert_array_equal(R.matmul(a, b, transpose_a=True, transpose_b=True), [[23.0, 31.0], [34.0, 46.0]])
    assert R.matmul(a.astype(np.float32), b, precision="tf32").dtype == np.float64


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_backward_matches_finite_differences(rng, transpose_a, transpose_b):
    M, K, N = 3, 5, 4
    a = rng.standard_normal((K, M) if transpose_a else (M, K))
    b = rng.standard_normal((N, K) if transpose_b else (K, N))
    grad_c = rng.standard_normal((M, N))
    grad_a, grad_b = R.matmul_backward(grad_c, a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    check_gradients(
        lambda: R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
        {"a": a, "b": b},
        {"a": grad_a, "b": grad_b},
        grad_c,
    )


def test_matmul_refuses_mismatched_inner_dimensions():
    with pytest.raises(ShapeError, match="inner dimensions"):
        R.matmul(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ShapeError, match="2-D"):
        R.matmul(np.ones(3), np.ones((3, 2)))


def test_linear_by_hand():
    x = np.array([[1.0, -2.0]])
    weight = np.array([[3.0, 1.0], [-1.0, 2.0], [0.5, 0.5]])
    bias = np.array([0.5, 1.0, -1.0])
    # x @ weight.T = [1, -5, -0.5]; + bias = [1.5, -4, -1.5]
    np.testing.assert_array_equal(R.linear(x, weight, bias), [[1.5, -4.0, -1.5]])
    np.testing.assert_array_equal(R.linear(x, weight, bias, activation="relu"), [[1.5, 0.0, 0.0]])
    np.testing.assert_array_equal(R.linear(x, weight), [[1.0, -5.0, -0.5]])


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_backward_matches_finite_differences(rng, with_bias, activation):
    batch, n_in, n_out = 4, 5, 3
    x = rng.standard_normal((batch, n_in))
    weight = rng.standard_normal((n_out, n_in))
    bias = rng.standard_normal(n_out) if with_bias else None
    pre_activation = x @ weight.T + (bias if with_bias else 0.0)
    if activation == "relu":
        assert_away_from_kink(pre_activation)
        assert (pre_activation < 0).any() and (pre_activation > 0).any()
    y = R.linear(x, weight, bias, activation=activation)
    grad_y = rng.standard_normal(y.shape)
    grad_x, grad_w, grad_b = R.linear_backward(grad_y, x, weight, y=y, activation=activation)
    inputs = {"x": x, "weight": weight}
    analytic = {"x": grad_x, "weight": grad_w}
    if with_bias:
        inputs["bias"], analytic["bias"] = bias, grad_b
    check_gradients(lambda: R.linear(x, weight, bias, activation=activation), inputs, analytic, grad_y)
    # grad_b is returned even without a bias: the sum of the (masked) grad_y over the batch.
    masked = np.where(y > 0, grad_y, 0.0) if activation == "relu" else grad_y
    np.testing.assert_allclose(grad_b, masked.sum(axis=0), rtol=1e-15)


def test_linear_backward_relu_needs_y():
    with pytest.raises(ArgumentError, match="needs y"):
        R.linear_backward(np.ones((2, 3)), np.ones((2, 4)), np.ones((3, 4)), activation="relu")


# ---------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------


def direct_conv2d(x, weight, bias, stride, padding, dilation):
    """The definition, one output element at a time, skipping taps that land in the padding."""
    N, C, H, W = x.shape
    K, _, Rk, Sk = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    P = (H + 2 * ph - dh * (Rk - 1) - 1) // sh + 1
    Q = (W + 2 * pw - dw * (Sk - 1) - 1) // sw + 1
    y = np.zeros((N, K, P, Q))
    for n in range(N):
        for k in range(K):
            for p in range(P):
                for q in range(Q):
                    total = 0.0 if bias is None else bias[k]
                    for r in range(Rk):
                        h = p * sh - ph + r * dh
                        if not 0 <= h < H:
                            continue
                        for s in range(Sk):
                            w = q * sw - pw + s * dw
                            if 0 <= w < W:
                                total += float(np.dot(weight[k, :, r, s], x[n, :, h, w]))
                    y[n, k, p, q] = total
    return y


def test_conv2d_by_hand():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    weight = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # y[0,0] = 1*1 + 2*2 + 3*4 + 4*5 = 37, and so on one column / row along.
    np.testing.assert_array_equal(R.conv2d(x, weight)[0, 0], [[37.0, 47.0], [67.0, 77.0]])
    np.testing.assert_array_equal(R.conv2d(x, weight, np.array([1.0]))[0, 0], [[38.0, 48.0], [68.0, 78.0]])
    # Padding 1, stride 2: the corner window sees only x[0,0] under weight[1,1] -> 4;
    # the last window sees x[1:3,1:3] under the whole filter -> 5 + 12 + 24 + 36 = 77.
    np.testing.assert_array_equal(
        R.conv2d(x, weight, stride=2, padding=1)[0, 0], [[4.0, 18.0], [36.0, 77.0]]
    )
    # Dilation 2: the taps hit the four corners: 1*1 + 3*2 + 7*3 + 9*4 = 64.
    np.testing.assert_array_equal(R.conv2d(x, weight, dilation=2)[0, 0], [[64.0]])
    # The fused ReLU clips a negative filter's output.
    np.testing.assert_array_equal(R.conv2d(x, -weight, activation="relu")[0, 0], np.zeros((2, 2)))


# (N, C, H, W), (K, R, S), stride, padding, dilation: square and non-square kernels,
# C = 1 and 3, strides 2 and 3, padding, dilation 2, odd sizes.
CONV_CASES = [
    ((2, 1, 7, 6), (3, 3, 3), 1, 0, 1),
    ((1, 3, 9, 8), (2, 3, 2), 2, 1, 1),
    ((2, 3, 10, 11), (2, 2, 3), 3, (1, 0), 1),
    ((1, 2, 9, 7), (3, 3, 3), 1, 2, 2),
    ((2, 3, 8, 9), (2, 1, 4), (2, 1), (0, 2), (2, 1)),
    ((1, 1, 5, 5), (1, 5, 5), 1, 0, 1),
    ((3, 2, 1, 6), (2, 1, 3), 1, 0, 1),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", CONV_CASES)
def test_conv2d_matches_the_definition(rng, x_shape, w_shape, stride, padding, dilation):
    K, Rk, Sk = w_shape
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal((K, x_shape[1], Rk, Sk))
    bias = rng.standard_normal(K)
    y = R.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    pairs = [(v, v) if isinstance(v, int) else v for v in (stride, padding, dilation)]
    expected = direct_conv2d(x, weight, bias, *pairs)
    assert y.shape == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", CONV_CASES)
def test_conv2d_backward_matches_finite_differences(rng, x_shape, w_shape, stride, padding, dilation):
    K, Rk, Sk = w_shape
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal((K, x_shape[1], Rk, Sk))
    bias = rng.standard_normal(K)
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    y = R.conv2d(x, weight, bias, **geometry)
    grad_y = rng.standard_normal(y.shape)
    grad_x, grad_w, grad_b = R.conv2d_backward(grad_y, x, weight, **geometry)
    check_gradients(
        lambda: R.conv2d(x, weight, bias, **geometry),
        {"x": x, "weight": weight, "bias": bias},
        {"x": grad_x, "weight": grad_w, "bias": grad_b},
        grad_y,
    )


def test_conv2d_backward_with_fused_relu_matches_finite_differences(rng):
    x = rng.standard_normal((2, 3, 7, 8))
    weight = rng.standard_normal((4, 3, 3, 2))
    bias = rng.standard_normal(4)
    geometry = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    assert_away_from_kink(R.conv2d(x, weight, bias, **geometry))
    y = R.conv2d(x, weight, bias, activation="relu", **geometry)
    assert (y == 0).any() and (y > 0).any()
    grad_y = rng.standard_normal(y.shape)
    grad_x, grad_w, grad_b = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
    check_gradients(
        lambda: R.conv2d(x, weight, bias, activation="relu", **geometry),
        {"x": x, "weight": weight, "bias": bias},
        {"x": grad_x, "weight": grad_w, "bias": grad_b},
        grad_y,
    )


def test_conv2d_refuses_what_it_cannot_compute():
    x = np.ones((1, 3, 4, 4))
    with pytest.raises(ShapeError, match="channels"):
        R.conv2d(x, np.ones((2, 2, 3, 3)))
    with pytest.raises(ShapeError, match="does not fit"):
        R.conv2d(x, np.ones((2, 3, 5, 5)))
    with pytest.raises(ArgumentError, match="stride"):
        R.conv2d(x, np.ones((2, 3, 3, 3)), stride=0)
    with pytest.raises(ShapeError, match="grad_y"):
        R.conv2d_backward(np.ones((1, 2, 3, 3)), x, np.ones((2, 3, 3, 3)))


# ---------------------------------------------------------------------------
# activations
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
# max pooling
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
POOL_CASES = [
    (3, 2, 0, (7, 9)),
    (3, 2, 1, (7, 8)),
    (2, None, 0, (5, 6)),
    ((2, 3), (1, 2), (1, 1), (5, 7)),
    (1, 1, 0, (3, 4)),
]


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES)
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


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES)
def test_max_pool2d_backward_matches_finite_differences(rng, kernel, stride, padding, hw):
    # Distinct values spaced far beyond the step: no tie, so max is differentiable.
    shape = (2, 2, *hw)
    x = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 + 0.001 * rng.random(shape)
    y, argmax = R.max_pool2d(x, kernel, stride=stride, padding=padding)
    grad_y = rng.standard_normal(y.shape)
    grad_x = R.max_pool2d_backward(grad_y, argmax, x.shape)
    check_gradients(
        lambda: R.max_pool2d(x, kernel, stride=stride, padding=padding)[0], {"x": x}, {"x": grad_x}, grad_y
    )


def test_max_pool2d_backward_adds_where_windows_overlap():
    argmax = np.array([[0, 0], [0, 3]], dtype=np.int32).reshape(1, 1, 2, 2)
    grad_y = np.array([[1.0, 2.0], [4.0, 8.0]]).reshape(1, 1, 2, 2)
    grad_x = R.max_pool2d_backward(grad_y, argmax, (1, 1, 2, 2))
    np.testing.assert_array_equal(grad_x[0, 0], [[7.0, 0.0], [0.0, 8.0]])


def test_max_pool2d_refuses_padding_over_half_the_kernel():
    with pytest.raises(ArgumentError, match="padding"):
        R.max_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ArgumentError, match="argmax"):
        R.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 4), (1, 1, 2, 2))


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------


def test_softmax_cross_entropy_by_hand():
    loss, probs = R.softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([0]))
    assert loss.shape == () and loss.dtype == np.float64
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-15)
    np.testing.assert_array_equal(probs, [[0.5, 0.5]])
    # Two rows: the mean of log(1 + e^-1) and of log(1 + e^2) for the unlikely label.
    loss, _ = R.softmax_cross_entropy(np.array([[1.0, 0.0], [0.0, -2.0]]), np.array([0, 1], dtype=np.int32))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-14)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4], [1e4, -1e4], [-1e4, -1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, probs = R.softmax_cross_entropy(logits, np.array([0, 1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(probs))
    # Row 0 costs 0, row 1 costs 2e4, row 2 (a tie) log 2.
    assert float(loss) == pytest.approx((0.0 + 2e4 + math.log(2.0)) / 3, rel=1e-14)
    np.testing.assert_array_equal(probs, [[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])


def test_softmax_cross_entropy_backward_matches_finite_differences(rng):
    logits = rng.standard_normal((5, 7)) * 3
    labels = rng.integers(0, 7, size=5)
    _, probs = R.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-15)
    grad = R.softmax_cross_entropy_backward(probs, labels)
    check_gradients(lambda: R.softmax_cross_entropy(logits, labels)[0], {"logits": logits}, {"logits": grad}, 1.0)


def test_softmax_cross_entropy_refuses_labels_out_of_range():
    with pytest.raises(ArgumentError, match="labels"):
        R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


# ---------------------------------------------------------------------------
# SGD
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
