"""The conv2d stem (kernels/conv2d.cu, kernels/conv2d_tc.cu): 2-D convolution, forward and backward.

Everything about it, executor by executor: the float64 reference by hand, against
the definition and against finite differences; every check of
dlgpu/cases/conv2d.py on the CPU backend, on the CPU harness and on a GPU; the
CPU backend (im2col and Winograd) in float32 and float64 with its precision
emulation; every registered variant (dlgpu.cuda.conv2d.VARIANTS) x pass x
precision x tile configuration on the harness, on small odd configurations
(batch 1, C = 1 and 3, K = 1, prime and non-square H and W, stride 2 and 3,
dilation 2, padding, 1x1 and 7x7), outputs poisoned, each call checking which
kernel ran, the NHWC (channels_last) tensor-core kernels from 16-bit storage,
every kernel plain and under the sanitizers, and the launcher's choices; the
same on a GPU at larger odd and random configurations, bit for bit twice,
with the harness cross-checked against the device; bad input; and properties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu import memory_format
from dlgpu.cases import conv2d as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cpu import winograd as cpu_winograd
from dlgpu.cpu.gemm import round_operand
from dlgpu.cuda import conv2d as conv
from dlgpu.cuda import conv2d_nhwc as nhwc
from dlgpu.cuda import conv2d_wgmma
from dlgpu.cuda import gemm_cast, launch
from dlgpu.cuda.gemm import address
from dlgpu.errors import ArgumentError, LayoutError, ShapeError
from dlgpu.precision import BFLOAT16, storage_precision
from dlgpu.testing import (assert_away_from_kink, assert_close, bf16_bits, check_gradients, harness, random_array,
                           rel_error, same_bits, stored_values, to_numpy)
from dlgpu.testing.harness import HarnessExecutor, RecordingExecutor
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.properties import (INVALID_OK, assert_product_close, assert_same_specials, common, property_test,
                                      with_specials)
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]
# The largest relative error an "ieee" float32 result shows here is ~1e-7; each
# emulated precision must show at least this much more, or it was not applied.
MEASURABLE = {"tf32": 2e-5, "fp16": 2e-5, "bf16": 2e-4}


def nan_array(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# ---------------------------------------------------------------------------
# the reference
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
REFERENCE_CASES = [
    ((2, 1, 7, 6), (3, 3, 3), 1, 0, 1),
    ((1, 3, 9, 8), (2, 3, 2), 2, 1, 1),
    ((2, 3, 10, 11), (2, 2, 3), 3, (1, 0), 1),
    ((1, 2, 9, 7), (3, 3, 3), 1, 2, 2),
    ((2, 3, 8, 9), (2, 1, 4), (2, 1), (0, 2), (2, 1)),
    ((1, 1, 5, 5), (1, 5, 5), 1, 0, 1),
    ((3, 2, 1, 6), (2, 1, 3), 1, 0, 1),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", REFERENCE_CASES)
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


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", REFERENCE_CASES)
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


# (x shape, weight shape, groups, stride, padding): two groups, depthwise (groups = C), depthwise with two
# filters a channel, strided and padded.
GROUPED_CASES = [
    ((2, 4, 7, 6), (6, 2, 3, 3), 2, 1, 1),
    ((1, 3, 6, 7), (3, 1, 3, 2), 3, 2, 1),
    ((2, 2, 5, 5), (4, 1, 2, 3), 2, (1, 2), (1, 0)),
]


@pytest.mark.parametrize("x_shape, w_shape, groups, stride, padding", GROUPED_CASES)
def test_grouped_conv2d_matches_pytorch_in_float64(rng, x_shape, w_shape, groups, stride, padding):
    torch = pytest.importorskip("torch")
    x, weight, bias = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    expected = torch.nn.functional.conv2d(*map(torch.from_numpy, (x, weight, bias)), stride, padding, 1, groups)
    np.testing.assert_allclose(R.conv2d(x, weight, bias, stride, padding, 1, groups), expected.numpy(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, w_shape, groups, stride, padding", GROUPED_CASES)
def test_grouped_conv2d_backward_matches_finite_differences(rng, x_shape, w_shape, groups, stride, padding):
    x, weight, bias = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    geometry = dict(stride=stride, padding=padding, groups=groups)
    grad_y = rng.standard_normal(R.conv2d(x, weight, bias, **geometry).shape)
    grad_x, grad_w, grad_b = R.conv2d_backward(grad_y, x, weight, **geometry)
    check_gradients(lambda: R.conv2d(x, weight, bias, **geometry), {"x": x, "weight": weight, "bias": bias},
                    {"x": grad_x, "weight": grad_w, "bias": grad_b}, grad_y)


@pytest.mark.parametrize("x_shape, w_shape, groups, stride, padding", GROUPED_CASES)
def test_grouped_conv2d_on_the_cpu(rng, x_shape, w_shape, groups, stride, padding):
    x, weight = random_array(rng, x_shape), random_array(rng, w_shape)
    bias = random_array(rng, (w_shape[0],))
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups, activation="relu")
    y_ref = R.conv2d(x, weight, bias, stride, padding, 1, groups, activation="relu")
    assert_close(y, y_ref)
    out = np.full(y.shape, np.nan, np.float32)
    assert F.conv2d(x, weight, bias, stride, padding, 1, groups, activation="relu", out=out) is out
    assert_close(out, y_ref)
    grad_y = random_array(rng, y.shape)
    geometry = dict(stride=stride, padding=padding, groups=groups, activation="relu")
    for got, expected in zip(F.conv2d_backward(grad_y, x, weight, y=y, **geometry),
                             R.conv2d_backward(grad_y, x, weight, y=y, **geometry)):
        assert_close(got, expected)


@pytest.mark.parametrize("kernel, dilation, expected", [((3, 3), 1, (1, 1)), ((5, 3), (1, 2), (2, 2)),
                                                        ((1, 1), 1, (0, 0))])
def test_padding_same_and_valid(rng, kernel, dilation, expected):
    x = random_array(rng, (2, 3, 9, 8))
    weight = random_array(rng, (4, 3, *kernel))
    same = F.conv2d(x, weight, padding="same", dilation=dilation)
    assert same.shape == (2, 4, 9, 8)
    np.testing.assert_array_equal(same, F.conv2d(x, weight, padding=expected, dilation=dilation))
    np.testing.assert_array_equal(F.conv2d(x, weight, padding="valid", dilation=dilation),
                                  F.conv2d(x, weight, dilation=dilation))
    grad_y = random_array(rng, same.shape)
    for got, explicit in zip(F.conv2d_backward(grad_y, x, weight, padding="same", dilation=dilation),
                             F.conv2d_backward(grad_y, x, weight, padding=expected, dilation=dilation)):
        np.testing.assert_array_equal(got, explicit)


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/conv2d.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


# (N, C, H, W, K, R, S, stride, padding, dilation): C=1, C=3, K=1, 1x1 and 7x7
# kernels, stride 2 and 3, dilation 2, asymmetric padding, sizes that are primes.
CPU_CASES = [
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


WINOGRAD_CASES = CPU_CASES[-3:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_conv2d_on_the_cpu(rng, dtype, case):
    n, c, h, w, k, r, s, stride, padding, dilation = case
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    x = random_array(rng, (n, c, h, w), dtype)
    weight = random_array(rng, (k, c, r, s), dtype)
    bias = random_array(rng, (k,), dtype)
    for activation, b in (("relu", bias), (None, None)):
        y_ref = R.conv2d(x, weight, b, activation=activation, **geometry)
        out = nan_array(y_ref.shape, dtype)
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


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_precision_emulation_conv2d(rng, precision):
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


# ---------------------------------------------------------------------------
# the kernels on the CPU harness: every variant, pass, precision and configuration
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    x: tuple[int, int, int, int]  # N, C, H, W
    w: tuple[int, int, int, int]  # K, C, R, S
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def id(self) -> str:
        return (f"x{'x'.join(map(str, self.x))}-w{'x'.join(map(str, self.w))}-s{self.stride[0]}{self.stride[1]}"
                f"-p{self.padding[0]}{self.padding[1]}-d{self.dilation[0]}{self.dilation[1]}")

    def geometry(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)


CONFIGS = (
    Config((1, 1, 7, 5), (1, 1, 3, 3), padding=(1, 1)),  # batch 1, C = 1, K = 1
    Config((2, 3, 13, 11), (5, 3, 7, 7), stride=(2, 2), padding=(3, 3)),  # the RGB 7x7/2 first layer
    Config((2, 4, 13, 11), (6, 4, 3, 3), stride=(3, 2), padding=(1, 2), dilation=(2, 1)),  # stride 3, dilation 2
    Config((3, 5, 5, 7), (33, 5, 1, 1)),  # 1x1 fast path, K over a 32-wide tile
    Config((1, 2, 17, 17), (3, 2, 5, 5), padding=(2, 2), dilation=(2, 2)),
    Config((2, 6, 4, 4), (7, 6, 1, 1), stride=(2, 2)),  # 1x1 at stride 2: the general path; P*Q = 4
    Config((3, 2, 15, 16), (4, 2, 3, 3), padding=(1, 1)),  # 720 pixels: several block rows, float4 stores
    Config((1, 3, 3, 2), (2, 3, 3, 2), padding=(0, 0)),  # a single output pixel
)


CONFIG_IDS = [c.id for c in CONFIGS]


def combos(pass_: str):
    """(variant, precision, config name or None) for every registered combination of a pass."""
    return [(name, precision, config.name if config else None)
            for name, variant in conv.VARIANTS.items() if pass_ in variant.passes
            for precision in variant.passes[pass_]
            for config in (conv.configs_for(name, pass_) or (None,))]


def harness_combinations(pass_: str):
    """Every combination on every configuration, except that the 16-bit precisions, whose kernels
    are the tf32 ones in another build, see a third of the configurations (CI time)."""
    return [pytest.param(v, p, c, config, id=f"{v}-{p}-{c or 'any'}-{config.id}")
            for v, p, c in combos(pass_) for index, config in enumerate(CONFIGS)
            if p not in ("bf16", "fp16") or index % 3 == (0 if p == "bf16" else 1)]


def inputs(rng, config: Config, *, relu: bool):
    x = random_array(rng, config.x)
    weight = random_array(rng, config.w)
    bias = random_array(rng, config.w[0])
    y = R.conv2d(x, weight, bias, activation="relu" if relu else None, **config.geometry())
    grad_y = random_array(rng, y.shape)
    return x, weight, bias, y.astype(np.float32), grad_y


def ran(executor, family: str, kernel: str) -> None:
    assert (family, kernel) in executor.launched, sorted(executor.launched)


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), harness_combinations("forward"))
def test_forward_matches_the_reference(variant, precision, tile, config, plain, rng):
    for relu, with_bias in ((True, True), (False, False)):
        x, weight, bias, _, _ = inputs(rng, config, relu=relu)
        bias = bias if with_bias else None
        g = conv.geometry("test", x.shape, weight.shape, config.stride, config.padding, config.dilation)
        plan = conv.choose_forward(g, precision, sms=1, variant=variant, config=tile)
        out = np.full((g.N, g.K, g.P, g.Q), np.nan, np.float32)
        y = conv.forward(x, weight, bias, relu=relu, precision=precision, out=out, variant=variant, config=tile,
                         executor=plain, **config.geometry())
        assert y is out
        ran(plain, conv.VARIANTS[plan.variant].family, plan.kernel)
        activation = "relu" if relu else None
        expected = R.conv2d(x, weight, bias, activation=activation, **config.geometry())
        if y.size >= 64:  # the tolerance table's bounds are for outputs of some size, not two numbers
            assert_close(y, expected, dtype=np.float32, precision=precision)
        # Tight: against the reference fed the operands as the tensor cores read them, so only the
        # fp32 accumulation differs (and tf32's ties, away from zero on the device, to even here).
        rounded = R.conv2d(round_operand(x, precision), round_operand(weight, precision), bias,
                             activation=activation, **config.geometry())
        assert rel_error(y, rounded) <= 1e-4


@pytest.mark.parametrize("variant", ("simt", "tc"))
def test_the_one_by_one_kernels_run_for_one_by_one_filters(variant, plain, rng):
    config = CONFIGS[3]
    x, weight, bias, _, _ = inputs(rng, config, relu=False)
    precision = conv.VARIANTS[variant].passes["forward"][0]
    for tile in conv.CONFIGS[variant]:
        y = conv.forward(x, weight, bias, precision=precision, variant=variant, config=tile.name, executor=plain)
        ran(plain, conv.VARIANTS[variant].family, f"conv2d_fwd_{variant}_{tile.name}_1x1_f32")
        assert_close(y, R.conv2d(x, weight, bias), dtype=np.float32, precision=precision)


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), harness_combinations("dgrad"))
def test_dgrad_matches_the_reference(variant, precision, tile, config, plain, rng):
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    for mask in (y, None):
        activation = "relu" if mask is not None else None
        expected = R.conv2d_backward(grad_y, x, weight, y=mask, activation=activation, **config.geometry())[0]
        out = np.full(x.shape, np.nan, np.float32)
        grad_x = conv.dgrad(grad_y, weight, x.shape, mask=mask, precision=precision, out=out, variant=variant,
                            config=tile, executor=plain, **config.geometry())
        assert grad_x is out
        kernel = f"conv2d_dgrad_{variant}_{tile}_f32" if tile else "conv2d_dgrad_naive_f32"
        ran(plain, conv.VARIANTS[variant].family, kernel)
        if variant == "tc":  # tight, as for the forward: only the accumulation may differ
            rounded = R.conv2d_backward(round_operand(grad_y, precision), x, round_operand(weight, precision),
                                          y=mask, activation=activation, **config.geometry())[0]
            assert rel_error(grad_x, rounded) <= 1e-4
        assert_close(grad_x, expected, dtype=np.float32, precision=precision)


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), harness_combinations("wgrad"))
def test_wgrad_matches_the_reference(variant, precision, tile, config, plain, rng):
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    # simt, tc: the default split count, and a forced three-way split (the fixed-order second pass).
    for mask, splits in ((y, None), (None, 3 if variant != "naive" else None)):
        activation = "relu" if mask is not None else None
        expected = R.conv2d_backward(grad_y, x, weight, y=mask, activation=activation, **config.geometry())[1]
        out = np.full(weight.shape, np.nan, np.float32)
        grad_w = conv.wgrad(grad_y, x, weight.shape, mask=mask, precision=precision, out=out, variant=variant,
                            config=tile, splits=splits, executor=plain, **config.geometry())
        assert grad_w is out
        kernel = {"naive": "conv2d_wgrad_naive_f32", "simt": "conv2d_wgrad_simt_f32"}.get(variant)
        ran(plain, conv.VARIANTS[variant].family, kernel or f"conv2d_wgrad_tc_{tile}_f32")
        if variant == "tc":
            rounded = R.conv2d_backward(round_operand(grad_y, precision), round_operand(x, precision), weight,
                                          y=mask, activation=activation, **config.geometry())[1]
            assert rel_error(grad_w, rounded) <= 1e-4
        assert_close(grad_w, expected, dtype=np.float32, precision=precision)


def test_tensor_core_taps_step_across_channels_rows_and_images(plain, rng):
    """The NCHW tensor-core kernels' tap table and cursors (kernels/conv2d_tc.cu): a 3x5 filter (15 taps, so
    every 16-tap tile crosses a channel), stride 2, dilation 2 x 1, 105 output pixels (no tile multiple, three
    images of 5 x 7), and a three-way wgrad split whose 16-pixel tiles cross rows and images."""
    config = Config((3, 5, 11, 13), (6, 5, 3, 5), stride=(2, 2), padding=(1, 2), dilation=(2, 1))
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    rounded_x, rounded_w, rounded_g = (round_operand(a, "tf32") for a in (x, weight, grad_y))
    expected_y = R.conv2d(rounded_x, rounded_w, bias, activation="relu", **config.geometry())
    expected = R.conv2d_backward(rounded_g, rounded_x, rounded_w, y=y, activation="relu", **config.geometry())
    for tile in conv.TC_CONFIGS:
        kw = dict(precision="tf32", variant="tc", config=tile.name, executor=plain, **config.geometry())
        assert rel_error(conv.forward(x, weight, bias, relu=True, **kw), expected_y) <= 1e-4
        assert rel_error(conv.dgrad(grad_y, weight, x.shape, mask=y, **kw), expected[0]) <= 1e-4
        assert rel_error(conv.wgrad(grad_y, x, weight.shape, mask=y, splits=3, **kw), expected[1]) <= 1e-4
        for pass_ in ("fwd", "dgrad", "wgrad"):
            ran(plain, "conv2d_tc", f"conv2d_{pass_}_tc_{tile.name}_f32")


def test_tensor_core_forward_refuses_taps_past_sixteen_bits():
    """ForwardOps::ATap holds (dh, dw) in 16 bits: exact for any filter on sides up to 2^16 - 1 (padded), so
    only a longer side with a longer filter span goes to simt, or is refused when tc is asked for."""
    long_side = g_of((1, 1, 70000, 1), (1, 1, 3, 1), dilation=(34000, 1))
    assert not conv.tc_taps_fit(long_side)
    assert conv.choose_forward(long_side, "tf32", sms=1).variant == "simt"
    with pytest.raises(ShapeError, match="16 bits|up to 65535"):
        conv.choose_forward(long_side, "tf32", sms=1, variant="tc")
    for fits in (g_of((1, 1, 70000, 1), (1, 1, 3, 1), dilation=(30000, 1)),  # span 60000: exact
                 g_of((1, 1, 65000, 1), (1, 1, 3, 1), dilation=(32000, 1))):  # side 65000: exact
        assert conv.tc_taps_fit(fits) and conv.choose_forward(fits, "tf32", sms=1).variant == "tc"


@pytest.mark.parametrize("precision", ("ieee", "tf32", "bf16", "fp16"))
def test_backend_functions_at_every_precision(precision, plain, rng):
    """conv2d / conv2d_backward as dlgpu.cuda calls them: fused ReLU forward, then all three gradients."""
    config = CONFIGS[2]  # stride 3 x 2, dilation 2 x 1, asymmetric padding
    x, weight, bias, _, _ = inputs(rng, config, relu=True)
    y = conv.conv2d(x, weight, bias, config.stride, config.padding, config.dilation, "relu", precision, None,
                    executor=plain)
    expected_y = R.conv2d(x, weight, bias, activation="relu", **config.geometry())
    assert_close(y, expected_y, dtype=np.float32, precision=precision)
    grad_y = random_array(rng, y.shape)
    grads = conv.conv2d_backward(grad_y, x, weight, y, config.stride, config.padding, config.dilation, "relu",
                                 precision, executor=plain)
    expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **config.geometry())
    for got, want in zip(grads, expected):
        assert_close(got, want, dtype=np.float32, precision=precision)
    ran(plain, "bias_grad", "bias_grad_relu_partial_f32")


def test_results_are_bitwise_deterministic(plain, rng):
    config = CONFIGS[6]
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    first = (conv.forward(x, weight, bias, relu=True, executor=plain, **config.geometry()),
             conv.wgrad(grad_y, x, weight.shape, mask=y, splits=4, executor=plain, **config.geometry()),
             conv.dgrad(grad_y, weight, x.shape, mask=y, executor=plain, **config.geometry()))
    second = (conv.forward(x, weight, bias, relu=True, executor=plain, **config.geometry()),
              conv.wgrad(grad_y, x, weight.shape, mask=y, splits=4, executor=plain, **config.geometry()),
              conv.dgrad(grad_y, weight, x.shape, mask=y, executor=plain, **config.geometry()))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    # The tile configuration (chosen by SM count) does not change the summation order either.
    for variant, precision in (("simt", "ieee"), ("tc", "bf16")):
        outputs = [conv.forward(x, weight, bias, precision=precision, variant=variant, config=c.name, executor=plain,
                                **config.geometry()) for c in conv.CONFIGS[variant]]
        for other in outputs[1:]:
            np.testing.assert_array_equal(outputs[0].view(np.uint32), other.view(np.uint32))


def test_launchers_check_shapes(plain, rng):
    x, weight = random_array(rng, (1, 3, 6, 6)), random_array(rng, (4, 3, 3, 3))
    with pytest.raises(ShapeError, match="bias has shape"):
        conv.forward(x, weight, random_array(rng, 5), executor=plain)
    with pytest.raises(ShapeError, match="out has shape"):
        conv.forward(x, weight, out=np.empty((1, 4, 5, 5), np.float32), executor=plain)
    with pytest.raises(ShapeError, match="grad_y has shape"):
        conv.dgrad(random_array(rng, (1, 4, 5, 5)), weight, x.shape, executor=plain)
    with pytest.raises(ShapeError, match="y has shape"):
        conv.wgrad(random_array(rng, (1, 4, 4, 4)), x, weight.shape, mask=random_array(rng, (1, 4, 5, 4)),
                   executor=plain)
    with pytest.raises(ArgumentError, match="needs y"):
        conv.conv2d_backward(random_array(rng, (1, 4, 4, 4)), x, weight, None, (1, 1), (0, 0), (1, 1), "relu",
                             "ieee", executor=plain)


# ---------------------------------------------------------------------------
# the NHWC (channels_last) tensor-core kernels (kernels/conv2d_tc.cu, dlgpu/cuda/conv2d_nhwc.py)
# ---------------------------------------------------------------------------
# The three passes against the reference (NCHW, float64; arrays transposed here), outputs poisoned: 16-bit
# operands read in place, fp32 operands at tf32 and through the producer pass, channel counts that need zero
# padding (a first layer's 3), several channel blocks per tap, tiles crossing every edge, and the launcher's
# rules.  The kernel cases below run every NHWC kernel of every build plain and under ASan and TSan.


def to_nhwc(array):
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def to_nchw(array):
    return array.transpose(0, 3, 1, 2)


def nhwc_stored(values, precision: str):
    return {"bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16), "tf32": lambda v: v}[precision](values)


def nhwc_inputs(rng, x_shape, w_shape, precision, geometry):
    """x, w (NCHW / OIHW, float64 of the stored values), their NHWC storage, bias, y, grad_y."""
    x16 = nhwc_stored(random_array(rng, x_shape), precision)
    w16 = nhwc_stored(random_array(rng, w_shape), precision)
    x, w = stored_values(x16, precision), stored_values(w16, precision)
    bias = random_array(rng, w_shape[0])
    y = R.conv2d(x, w, bias, activation="relu", **geometry)
    grad_y = nhwc_stored(random_array(rng, y.shape), precision)
    return x, w, to_nhwc(x16), to_nhwc(w16), bias, y, grad_y


def nhwc_geo(stride=1, padding=0, dilation=1):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return dict(stride=pair(stride), padding=pair(padding), dilation=pair(dilation))


# (x NCHW, w OIHW, geometry): C = 40 (two 32-channel blocks per tap at 16 bits, three of 16 floats), 243
# pixels (two 128-row tiles) and K = 136 (two 128-column tiles) at a 3x3 / pad 1; a strided, dilated,
# rectangular case with batch 1; a 1x1; and the loaders' stepping under stress: stride 2, dilation 2 (h) and
# 3 (w, not a multiple of the stride: the dgrad's remainders wrap), a 3x5 filter, 5 x 3 output pixels per
# image (45 in all: the wgrad's 32- or 16-pixel tiles do not divide it, and one tile's step crosses whole
# images) and 429 input pixels (four 128-row dgrad tiles, the last partial).
NHWC_CASES = (
    ((3, 40, 9, 9), (136, 40, 3, 3), nhwc_geo(1, 1)),
    ((1, 16, 11, 7), (24, 16, 3, 2), nhwc_geo((2, 1), (1, 0), (1, 2))),
    ((2, 32, 5, 6), (8, 32, 1, 1), nhwc_geo()),
    ((3, 16, 11, 13), (24, 16, 3, 5), nhwc_geo(2, (1, 2), (2, 3))),
)
NHWC_BACKWARD_CASES = (0, 1, 3)  # the 1x1 adds nothing to the backward passes' gathers


@pytest.mark.parametrize("precision", ("tf32", "bf16", "fp16"))
@pytest.mark.parametrize("case", range(len(NHWC_CASES)))
def test_nhwc_forward_matches_the_reference(plain, rng, precision, case):
    x_shape, w_shape, geometry = NHWC_CASES[case]
    x, w, x_n, w_n, bias, y, _ = nhwc_inputs(rng, x_shape, w_shape, precision, geometry)
    plain.launched.clear()
    out = nhwc.forward(x_n, w_n, bias, relu=True, precision=precision, executor=plain, **geometry)
    assert {family for family, _ in plain.launched} == {"conv2d_tc"}  # channels aligned: no producer pass
    assert out.dtype == x_n.dtype and out.shape == to_nhwc(y).shape
    assert_close(stored_values(to_nchw(out), precision), y, dtype=np.float32, precision=precision)


@pytest.mark.parametrize("precision", ("tf32", "bf16"))
def test_nhwc_backward_passes_match_the_reference(plain, rng, precision):
    for x_shape, w_shape, geometry in (NHWC_CASES[i] for i in NHWC_BACKWARD_CASES):
        x, w, x_n, w_n, _, y, grad_y = nhwc_inputs(rng, x_shape, w_shape, precision, geometry)
        y16 = nhwc_stored(y.astype(np.float32), precision)
        expected = R.conv2d_backward(stored_values(grad_y, precision), x, w, y=stored_values(y16, precision),
                                       activation="relu", **geometry)
        kw = dict(mask=to_nhwc(y16), precision=precision, executor=plain, **geometry)
        grad_x = nhwc.dgrad(to_nhwc(grad_y), w_n, x_n.shape, **kw)
        assert grad_x.dtype == x_n.dtype
        assert_close(stored_values(to_nchw(grad_x), precision), expected[0], dtype=np.float32, precision=precision)
        grad_w = nhwc.wgrad(to_nhwc(grad_y), x_n, w_n.shape, **kw)
        assert grad_w.dtype == np.float32  # fp32 master weights' gradient
        assert_close(to_nchw(grad_w), expected[1], precision=precision)


def test_nhwc_first_layer_pads_its_three_channels(plain, rng):
    """C = 3 is not a multiple of 16 bytes: the producer pass pads x and w with zero channels (and casts the
    fp32 operands to bf16 on the way); every pass still matches, grad_x and grad_w unpadded."""
    geometry = nhwc_geo(2, 2)
    x = random_array(rng, (2, 3, 9, 7))
    w = random_array(rng, (8, 3, 5, 5))
    y = R.conv2d(x, w, activation="relu", **geometry)
    grad_y = random_array(rng, y.shape)
    expected = R.conv2d_backward(grad_y, x, w, y=y.astype(np.float32), activation="relu", **geometry)
    kw = dict(precision="bf16", executor=plain, **geometry)
    plain.launched.clear()
    out = nhwc.forward(to_nhwc(x), to_nhwc(w), relu=True, **kw)
    assert (gemm_cast.FAMILY, "cast_f32_bf16") in plain.launched and out.dtype == np.float32
    assert_close(to_nchw(out), y, precision="bf16")
    mask = to_nhwc(y.astype(np.float32))
    grad_x = nhwc.dgrad(to_nhwc(grad_y), to_nhwc(w), (2, 9, 7, 3), mask=mask, **kw)
    assert grad_x.shape == (2, 9, 7, 3)
    assert_close(to_nchw(grad_x), expected[0], precision="bf16")
    grad_w = nhwc.wgrad(to_nhwc(grad_y), to_nhwc(x), (8, 5, 5, 3), mask=mask, **kw)
    assert grad_w.shape == (8, 5, 5, 3)
    assert_close(to_nchw(grad_w), expected[1], precision="bf16")


def test_nhwc_wgrad_bits_do_not_depend_on_the_device(rng):
    """The split count comes from the shape: executors with different SM counts give the same bits."""
    x_shape, w_shape, geometry = NHWC_CASES[1]
    _, _, x_n, w_n, _, y, grad_y = nhwc_inputs(rng, x_shape, w_shape, "fp16", geometry)
    results = [nhwc.wgrad(to_nhwc(grad_y), x_n, w_n.shape, precision="fp16", **geometry,
                          executor=HarnessExecutor("plain", multiprocessor_count=sms)) for sms in (1, 132)]
    assert results[0].tobytes() == results[1].tobytes()


def test_nhwc_16_bit_output_and_bias_in_the_operands_type(plain, rng):
    x_shape, w_shape, geometry = NHWC_CASES[2]
    x, w, x_n, w_n, _, _, _ = nhwc_inputs(rng, x_shape, w_shape, "fp16", geometry)
    bias16 = random_array(rng, w_shape[0]).astype(np.float16)
    expected = R.conv2d(x, w, bias16.astype(np.float64), **geometry)
    out32 = nhwc.forward(x_n, w_n, bias16, out_dtype=np.float32, executor=plain, **geometry)
    assert out32.dtype == np.float32
    assert_close(to_nchw(out32), expected, precision="fp16")
    out16 = nhwc.forward(x_n, w_n, bias16, executor=plain, **geometry)
    assert out16.dtype == np.float16
    assert_close(to_nchw(out16).astype(np.float64), expected, dtype=np.float32, precision="fp16")


def test_the_nhwc_launcher_refuses_what_the_kernels_cannot_do(plain, rng):
    x, w = random_array(rng, (1, 5, 5, 8)), random_array(rng, (4, 3, 3, 8))
    with pytest.raises(ArgumentError, match="tensor cores"):
        nhwc.forward(x, w, executor=plain)  # float32 at "ieee": no NHWC kernel computes exact fp32
    with pytest.raises(ShapeError, match="channels"):
        nhwc.forward(x, random_array(rng, (4, 3, 3, 7)), precision="tf32", executor=plain)
    with pytest.raises(ShapeError, match="grad_y"):
        nhwc.dgrad(random_array(rng, (1, 5, 5, 4)), w, x.shape, precision="tf32", executor=plain)
    with pytest.raises(ArgumentError, match="config must be one of"):
        nhwc.forward(x, w, precision="tf32", config="256x256", executor=plain)


# ---------------------------------------------------------------------------
# memory formats through the backend and the public ops: 16-bit NCHW arrays on the NHWC kernels from their own
# storage, channels_last arrays read where they lie (dlgpu.memory_format, dlgpu.ops.conv2d.channels_last_call)
# ---------------------------------------------------------------------------


def same_memory(a, b) -> bool:
    """The kernel was handed ``b``'s own memory: the same first byte and the same bytes."""
    return address(a) == address(b) and a.nbytes == b.nbytes


@pytest.mark.parametrize("dtype", STORAGE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", (16, 3))
def test_16_bit_nchw_convolutions_run_on_the_nhwc_kernels_from_their_storage(plain, rng, dtype, channels):
    """No float32 copy of any operand: each pass's tensor-core kernel reads 16-bit storage (an NCHW array
    transposed once; C = 3 zero-padded by the producer pass on the way); the ReLU mask is applied once, and
    the results are NCHW, C-contiguous, in the operands' dtype."""
    recorder = RecordingExecutor(plain)
    precision = storage_precision(dtype)
    geometry = nhwc_geo(2, 1)
    pairs = tuple(geometry.values())
    x, w, b = (random_array(rng, shape, dtype) for shape in ((2, channels, 9, 7), (8, channels, 3, 3), 8))
    y = conv.conv2d(x, w, b, *pairs, "relu", precision, None, executor=recorder)
    grad_y = random_array(rng, y.shape, dtype)
    grads = conv.conv2d_backward(grad_y, x, w, y, *pairs, "relu", precision, executor=recorder)
    refs = (R.conv2d(x, w, b, activation="relu", **geometry),
            *R.conv2d_backward(grad_y, x, w, y=y, activation="relu", **geometry))
    for got, ref in zip((y, *grads), refs):
        assert got.dtype == dtype and got.flags.c_contiguous and got.shape == ref.shape
        assert_close(got, ref, precision=precision)
    tensor_core = recorder.of("conv2d_tc")
    assert [launch.kernel.split("_")[1] for launch in tensor_core] == ["fwd", "dgrad", "wgrad"]
    assert all(np.dtype(launch.args[i].dtype) == dtype for launch in tensor_core for i in (0, 1))
    assert {launch.family for launch in recorder.launches} <= {"conv2d_tc", "gemm_cast", "bias_grad", "conv2d"}
    casts = [launch.kernel for launch in recorder.of(gemm_cast.FAMILY)]
    assert not any(kernel.endswith("_f32") for kernel in casts)  # nothing widened
    # The mask, once (C = 3 adds the padding copies of x and w for each pass).
    masked = [launch for launch in recorder.of(gemm_cast.FAMILY) if launch.args[1] is not launch.args[0]]
    assert len(masked) == 1


@pytest.mark.parametrize("dtype, precision", ((np.float32, "tf32"), (BFLOAT16, None)), ids=("tf32", "bfloat16"))
def test_channels_last_arrays_are_read_in_place_and_answered_channels_last(harness_conv2d, rng, dtype, precision):
    x = memory_format.channels_last(random_array(rng, (2, 16, 6, 7), dtype))
    w = memory_format.channels_last(random_array(rng, (24, 16, 3, 3), dtype))
    b = random_array(rng, 24, dtype)
    ref = R.conv2d(x, w, b, padding=1, activation="relu")
    y = F.conv2d(x, w, b, padding=1, activation="relu", precision=precision)
    [launch] = harness_conv2d.launches  # channels aligned: no producer pass, no copy
    assert launch.kernel.endswith("_nhwc") and same_memory(launch.args[0], x) and same_memory(launch.args[1], w)
    assert memory_format.is_channels_last(y) and y.dtype == dtype and same_memory(launch.args[3], y)
    assert_close(y, ref, precision=precision or "bf16")
    out = memory_format.channels_last(np.full(y.shape, np.nan, np.float32))  # 16-bit operands: the fp32 sums
    assert F.conv2d(x, w, b, padding=1, activation="relu", precision=precision, out=out, out_dtype=np.float32) is out
    assert same_memory(harness_conv2d.launches[-1].args[3], out)
    assert_close(out, ref, dtype=dtype, precision=precision or "bf16")


def test_channels_last_backward_gives_each_gradient_its_operands_format(harness_conv2d, rng):
    """x and grad_y channels_last, the weight OIHW: grad_x comes back channels_last, grad_w OIHW; grad_y and x
    are read in place, and with a fused ReLU the one masked copy of grad_y serves both passes."""
    dtype, geometry = np.float16, dict(stride=2, padding=1)
    x = memory_format.channels_last(random_array(rng, (2, 16, 9, 8), dtype))
    w = random_array(rng, (8, 16, 3, 3), dtype)
    y = F.conv2d(x, w, None, activation="relu", **geometry)
    grad_y = memory_format.channels_last(random_array(rng, y.shape, dtype))
    for activation in (None, "relu"):
        harness_conv2d.launches.clear()
        grads = F.conv2d_backward(grad_y, x, w, y=y, activation=activation, **geometry)
        refs = R.conv2d_backward(grad_y, x, w, y=y, activation=activation, **geometry)
        assert memory_format.is_channels_last(grads[0]) and grads[1].flags.c_contiguous
        for got, ref in zip(grads, refs):
            assert got.dtype == dtype
            assert_close(got, ref, precision="fp16")
        dgrad, wgrad = (launch for launch in harness_conv2d.of("conv2d_tc"))
        assert same_memory(wgrad.args[1], x)
        if activation is None:
            assert same_memory(dgrad.args[0], grad_y) and same_memory(wgrad.args[0], grad_y)
        else:
            # (the other producer launch rounds grad_w's float32 sums to float16)
            [masked] = [launch for launch in harness_conv2d.of(gemm_cast.FAMILY) if launch.args[1] is not launch.args[0]]
            assert same_memory(dgrad.args[0], masked.args[2]) and same_memory(wgrad.args[0], masked.args[2])


def test_channels_last_is_copied_to_nchw_where_the_backend_cannot_read_it(harness_conv2d, rng):
    """Exact fp32 ("ieee") and grouped convolutions run on NCHW kernels: channels_last inputs are copied, and y
    is C-contiguous, as on the CPU backend."""
    x = memory_format.channels_last(random_array(rng, (1, 4, 6, 5)))
    w = memory_format.channels_last(random_array(rng, (6, 4, 3, 3)))
    for precision, groups in (("ieee", 1), ("tf32", 2)):
        weight = w if groups == 1 else np.ascontiguousarray(w[:, :2])
        y = F.conv2d(x, weight, None, padding=1, groups=groups, precision=precision)
        assert y.flags.c_contiguous
        assert_close(y, R.conv2d(x, weight, padding=1, groups=groups), precision=precision)
    assert not any(launch.kernel.endswith("_nhwc") for launch in harness_conv2d.launches)
    with pytest.raises(LayoutError, match="not C-contiguous"):
        F.conv2d(x, w, padding=1, out=memory_format.channels_last(np.empty((1, 6, 6, 5), np.float32)))


def test_the_cpu_backend_answers_channels_last_inputs_in_nchw(rng):
    x = memory_format.channels_last(random_array(rng, (2, 3, 7, 6)))
    w = random_array(rng, (4, 3, 3, 3))
    y = F.conv2d(x, w, padding=1, precision="tf32")
    assert y.flags.c_contiguous
    assert_close(y, R.conv2d(x, w, padding=1), precision="tf32")
    grad_x, grad_w, _ = F.conv2d_backward(memory_format.channels_last(random_array(rng, y.shape)), x, w, padding=1)
    assert grad_x.flags.c_contiguous and grad_w.flags.c_contiguous


def test_memory_formats_are_told_apart_by_strides():
    nchw = np.zeros((2, 3, 4, 5), np.float32)
    stored = np.zeros((2, 4, 5, 3), np.float32)
    last = stored.transpose(memory_format.TO_NCHW)
    assert memory_format.is_channels_last(last) and not memory_format.is_channels_last(nchw)
    assert memory_format.to_nhwc(last) is not None and np.shares_memory(memory_format.to_nhwc(last), stored)
    assert not np.shares_memory(memory_format.to_nhwc(nchw), nchw)
    assert memory_format.nhwc_view(nchw) is None and memory_format.nhwc_view(nchw[:, :2]) is None
    # One channel (or a 1x1 plane): the bytes read the same either way, and such an array counts as NCHW.
    assert not memory_format.is_channels_last(np.zeros((2, 1, 4, 5)))
    assert memory_format.nhwc_view(np.zeros((2, 1, 4, 5))) is not None
    assert not memory_format.is_channels_last(last[:, :2])  # a slice of one: neither format, copied


# ---------------------------------------------------------------------------
# every kernel, plain and under the sanitizers (the cases declare the kernels they launch)
# ---------------------------------------------------------------------------


# (x shape, w shape, stride, padding, dilation): stride 2 with padding and dilation 2 on a
# non-square prime input; a 1x1 layer for the simt fast path.
KERNEL_CONV_CASES = (
    ((2, 3, 7, 5), (5, 3, 3, 3), (2, 1), (1, 2), (2, 1)),
    ((1, 4, 3, 5), (6, 4, 1, 1), (1, 1), (0, 0), (1, 1)),
)


def conv_inputs(rng, x_shape, w_shape, geometry):
    x, weight, bias = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, w_shape[0])
    y = R.conv2d(x, weight, bias, activation="relu", **geometry)
    return x, weight, bias, y.astype(np.float32), random_array(rng, y.shape)


def conv_geometry(stride, padding, dilation):
    return dict(stride=stride, padding=padding, dilation=dilation)


def check_conv2d_naive(executor, rng):
    for x_shape, w_shape, *pairs in KERNEL_CONV_CASES[:1]:
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        out = conv.forward(x, weight, bias, relu=True, variant="naive", executor=executor, **geometry)
        assert_close(out, y)
        expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        assert_close(conv.dgrad(grad_y, weight, x.shape, mask=y, variant="naive", executor=executor,
                                       **geometry), expected[0])
        assert_close(conv.wgrad(grad_y, x, weight.shape, mask=y, variant="naive", executor=executor,
                                       **geometry), expected[1])


def check_conv2d_simt(executor, rng):
    # Under the sanitizers (slow thread start-up) each kernel runs once: the general kernels on the
    # strided case, the 1x1 kernels on the 1x1 case, dgrad and wgrad's split and finish on the first.
    for index, (x_shape, w_shape, *pairs) in enumerate(KERNEL_CONV_CASES):
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        for config in conv.SIMT_CONFIGS:
            out = conv.forward(x, weight, bias, relu=True, variant="simt", config=config.name,
                                      executor=executor, **geometry)
            assert_close(out, y)
        if index > 0 and executor.mode != "plain":
            continue
        expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        for config in conv.SIMT_CONFIGS:
            assert_close(conv.dgrad(grad_y, weight, x.shape, mask=y, variant="simt", config=config.name,
                                           executor=executor, **geometry), expected[0])
        for splits in (1, 2):
            assert_close(conv.wgrad(grad_y, x, weight.shape, mask=y, variant="simt", splits=splits,
                                           executor=executor, **geometry), expected[1])


def check_conv2d_tc(executor, rng):
    # Each precision is its own build: all three plain, bf16 under the sanitizers.
    precisions = conv.TC_PRECISIONS if executor.mode == "plain" else ("bf16",)
    for index, (x_shape, w_shape, *pairs) in enumerate(KERNEL_CONV_CASES):
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        for precision in precisions:
            for config in conv.TC_CONFIGS:
                kw = dict(precision=precision, variant="tc", config=config.name, executor=executor, **geometry)
                assert_close(conv.forward(x, weight, bias, relu=True, **kw), y, precision=precision)
                if index == 0:
                    assert_close(conv.dgrad(grad_y, weight, x.shape, mask=y, **kw), expected[0],
                                 precision=precision)
                    assert_close(conv.wgrad(grad_y, x, weight.shape, mask=y, splits=2, **kw), expected[1],
                                 precision=precision)


def check_conv2d_tc_nhwc(executor, rng):
    # NHWC as stored; 16 channels in, 12 out (padded to 16 for the 16-bit dgrad's reads), the strided case's
    # stride, padding and dilation.  All precisions plain, bf16 under the sanitizers.
    precisions = conv.TC_PRECISIONS if executor.mode == "plain" else ("bf16",)
    geometry = conv_geometry(*KERNEL_CONV_CASES[0][2:])
    x, weight, bias, y, grad_y = conv_inputs(rng, (2, 16, 7, 5), (12, 16, 3, 3), geometry)
    expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
    x_n, w_n, y_n, grad_y_n = (to_nhwc(a) for a in (x, weight, y, grad_y))
    for precision in precisions:
        for config in conv.NHWC_CONFIGS:
            kw = dict(precision=precision, config=config.name, executor=executor, **geometry)
            out = nhwc.forward(x_n, w_n, bias, relu=True, **kw)
            assert_close(to_nchw(out), y, precision=precision)
            grad_x = nhwc.dgrad(grad_y_n, w_n, x_n.shape, mask=y_n, **kw)
            assert_close(to_nchw(grad_x), expected[0], precision=precision)
            grad_w = nhwc.wgrad(grad_y_n, x_n, w_n.shape, mask=y_n, splits=2, **kw)
            assert_close(to_nchw(grad_w), expected[1], precision=precision)


def check_conv2d_wgmma(executor, rng):
    # Each kernel once (the sanitizers start 384 threads slowly): 16 channels (two taps per forward k-tile), 16
    # filters, padding on every edge; the forward strided and dilated, dgrad (stride 1 only) dilated and masked.
    # tests/test_conv2d_wgmma.py has the edges and planted bugs.
    forward_geometry = conv_geometry(*KERNEL_CONV_CASES[0][2:])
    dgrad_geometry = conv_geometry((1, 1), (1, 2), (2, 1))
    for name in conv2d_wgmma.kernel_names():
        pass_, config, precision = name.split("_")[1], *name.split("_")[3:]
        x16 = nhwc_stored(random_array(rng, (2, 16, 7, 5)), precision)
        w16 = nhwc_stored(random_array(rng, (16, 16, 3, 3)), precision)
        x, w = stored_values(x16, precision), stored_values(w16, precision)
        kw = dict(precision=precision, out_dtype=np.float32, config=config, executor=executor)
        if pass_ == "fwd":
            bias = random_array(rng, 16)
            y = conv2d_wgmma.forward(to_nhwc(x16), to_nhwc(w16), bias, relu=True, **kw, **forward_geometry)
            assert_close(to_nchw(y), R.conv2d(x, w, bias, activation="relu", **forward_geometry),
                         precision=precision)
            continue
        y16 = nhwc_stored(R.conv2d(x, w, activation="relu", **dgrad_geometry), precision)
        grad_y16 = nhwc_stored(random_array(rng, y16.shape), precision)
        grad_x = conv2d_wgmma.dgrad(to_nhwc(grad_y16), to_nhwc(w16), to_nhwc(x16).shape, mask=to_nhwc(y16), **kw,
                                    **dgrad_geometry)
        expected = R.conv2d_backward(stored_values(grad_y16, precision), x, w, y=stored_values(y16, precision),
                                     activation="relu", **dgrad_geometry)[0]
        assert_close(to_nchw(grad_x), expected, precision=precision)


KERNEL_CASES = (
    KernelCase("conv2d_naive", "conv2d", ("conv2d_fwd_naive_f32", "conv2d_dgrad_naive_f32", "conv2d_wgrad_naive_f32"),
               check_conv2d_naive),
    KernelCase("conv2d_simt", "conv2d",
               (*(f"conv2d_{p}_simt_{c.name}{s}_f32" for c in conv.SIMT_CONFIGS
                  for p, s in (("fwd", ""), ("fwd", "_1x1"), ("dgrad", ""))),
                "conv2d_wgrad_simt_f32", "conv2d_wgrad_finish_f32"),
               check_conv2d_simt),
    KernelCase("conv2d_tc", "conv2d_tc",
               tuple(f"conv2d_{p}_tc_{c.name}{s}_f32" for c in conv.TC_CONFIGS
                     for p, s in (("fwd", ""), ("fwd", "_1x1"), ("dgrad", ""), ("wgrad", ""))),
               check_conv2d_tc),
    KernelCase("conv2d_tc_nhwc", "conv2d_tc",
               tuple(f"conv2d_{p}_tc_{c.name}_nhwc" for c in conv.NHWC_CONFIGS for p in ("fwd", "dgrad", "wgrad")),
               check_conv2d_tc_nhwc),
    KernelCase("conv2d_wgmma", conv2d_wgmma.FAMILY, tuple(conv2d_wgmma.kernel_names()), check_conv2d_wgmma),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("conv2d", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the launcher's choices (no kernels run)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 9, 25, 49, 56, 3136, 12544, 65535, 2**20 + 1, 2**31 - 1])
def test_fast_divisor_is_exact(d):
    mul, shift = launch.fast_divisor(d)
    assert 0 < mul < 2**32
    rng = np.random.default_rng(d)
    multiples = rng.integers(0, (2**31 - 1) // d + 1, 4096, dtype=np.uint64) * np.uint64(d)
    n = np.concatenate([np.arange(0, min(4 * d + 4, 10**5), dtype=np.uint64),
                        rng.integers(0, 2**31, 4096, dtype=np.uint64),
                        multiples, multiples - np.uint64(1), multiples + np.uint64(1),
                        np.arange(2**31 - 1000, 2**31, dtype=np.uint64)])
    n = n[(n < 2**31)]
    # n * mul < 2^31 * 2^32: exact in uint64, as the kernels' 64-bit product is.
    np.testing.assert_array_equal((n * np.uint64(mul)) >> np.uint64(shift), n // np.uint64(d))


def test_fast_divisor_refuses_zero():
    with pytest.raises(ArgumentError, match="fast_divisor"):
        launch.fast_divisor(0)


def g_of(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    return conv.geometry("test", x, w, stride, padding, dilation)


def test_forward_choice_by_precision_and_shape():
    lenet = g_of((256, 1, 28, 28), (6, 1, 5, 5))
    assert conv.choose_forward(lenet, "ieee", sms=132).kernel == "conv2d_fwd_simt_128x32_f32"
    wide = g_of((32, 64, 56, 56), (64, 64, 3, 3), padding=(1, 1))
    plan = conv.choose_forward(wide, "ieee", sms=132)
    assert plan.kernel == "conv2d_fwd_simt_128x64_f32" and plan.grid == (32 * 56 * 56 // 128, 1, 1)
    deep = g_of((128, 512, 7, 7), (512, 512, 3, 3), padding=(1, 1))
    assert conv.choose_forward(deep, "ieee", sms=132).kernel == "conv2d_fwd_simt_128x128_f32"
    # Batch 32: 13 x 4 blocks of 128x128 would leave most of 132 SMs idle; 13 x 16 of 128x32 do not.
    deep_b32 = g_of((32, 512, 7, 7), (512, 512, 3, 3), padding=(1, 1))
    assert conv.choose_forward(deep_b32, "ieee", sms=132).kernel == "conv2d_fwd_simt_128x32_f32"
    assert conv.choose_forward(deep_b32, "ieee", sms=40).kernel == "conv2d_fwd_simt_128x128_f32"
    pointwise = g_of((32, 256, 56, 56), (64, 256, 1, 1))
    assert conv.choose_forward(pointwise, "ieee", sms=132).kernel == "conv2d_fwd_simt_128x64_1x1_f32"
    assert conv.choose_forward(pointwise, "bf16", sms=132).kernel == "conv2d_fwd_tc_128x64_1x1_f32"
    strided_pointwise = g_of((32, 256, 56, 56), (64, 256, 1, 1), stride=(2, 2))
    assert conv.choose_forward(strided_pointwise, "ieee", sms=132).kernel == "conv2d_fwd_simt_128x64_f32"
    for precision in conv.TC_PRECISIONS:
        plan = conv.choose_forward(wide, precision, sms=132)
        assert plan.variant == "tc" and plan.defines == (("CONV_TC_PRECISION", precision),)
        assert plan.shared_mem == conv.tc_shared_bytes(plan.config) <= 48 * 1024
    assert conv.choose_forward(lenet, "tf32", sms=132).kernel == "conv2d_fwd_tc_64x32_f32"
    naive = conv.choose_forward(wide, "tf32", sms=132, variant="naive")
    assert naive.kernel == "conv2d_fwd_naive_f32" and naive.grid[0] <= 8 * 132


def test_backward_choice_by_precision():
    g = g_of((32, 64, 56, 56), (64, 64, 3, 3), padding=(1, 1))
    assert conv.choose_dgrad(g, "ieee", sms=132).kernel == "conv2d_dgrad_simt_128x64_f32"
    for precision in ("tf32", "bf16", "fp16"):
        plan = conv.choose_dgrad(g, precision, sms=132)
        assert plan.kernel == "conv2d_dgrad_tc_128x64_f32" and plan.defines[0][0] == "CONV_TC_PRECISION"
    assert conv.choose_wgrad(g, "ieee", sms=132).kernel == "conv2d_wgrad_simt_f32"
    for precision in ("tf32", "bf16", "fp16"):
        plan = conv.choose_wgrad(g, precision, sms=132)
        assert plan.kernel == "conv2d_wgrad_tc_64x32_f32" and plan.grid == (1, 576 // 32, plan.splits)
        assert plan == conv.choose_wgrad(g, precision, sms=7)  # device-independent split count
    wide = g_of((32, 128, 28, 28), (128, 128, 3, 3), padding=(1, 1))
    assert conv.choose_wgrad(wide, "tf32", sms=132).kernel == "conv2d_wgrad_tc_128x64_f32"
    assert conv.choose_wgrad(g, "ieee", sms=132, variant="naive").kernel == "conv2d_wgrad_naive_f32"
    assert conv.choose_dgrad(g, "ieee", sms=132, variant="naive").kernel == "conv2d_dgrad_naive_f32"
    first_layer = g_of((32, 3, 224, 224), (64, 3, 7, 7), stride=(2, 2), padding=(3, 3))
    plan = conv.choose_dgrad(first_layer, "ieee", sms=132)  # columns are the 3 input channels
    assert plan.kernel == "conv2d_dgrad_simt_128x32_f32" and plan.grid == (32 * 224 * 224 // 128, 1, 1)


def test_wgrad_splits_depend_on_the_shape_only():
    g = g_of((32, 64, 56, 56), (64, 64, 3, 3), padding=(1, 1))
    plan = conv.choose_wgrad(g, "ieee", sms=132)
    assert plan == conv.choose_wgrad(g, "ieee", sms=7)
    splits, per_split = conv.wgrad_splits(g)
    assert (plan.splits, plan.pixels_per_split) == (splits, per_split)
    assert per_split % conv.WGRAD_STEP == 0 and per_split >= conv.WGRAD_MIN_PIXELS
    assert (splits - 1) * per_split < g.pixels <= splits * per_split
    assert plan.grid == (9, 1, splits)  # 576 taps / 64, 64 channels / 64
    tiny = g_of((1, 1, 5, 5), (1, 1, 3, 3))
    assert conv.wgrad_splits(tiny) == (1, 16)
    forced = conv.choose_wgrad(g, "ieee", sms=132, splits=10**9)  # capped: no empty split
    assert forced.pixels_per_split == conv.WGRAD_STEP and forced.splits == g.pixels // conv.WGRAD_STEP


def test_bad_requests_are_refused():
    g = g_of((1, 3, 8, 8), (4, 3, 3, 3))
    with pytest.raises(ArgumentError, match="variant must be one of"):
        conv.choose_forward(g, "ieee", sms=1, variant="fast")
    with pytest.raises(ArgumentError, match="computes wgrad at"):
        conv.choose_wgrad(g, "ieee", sms=1, variant="tc")
    with pytest.raises(ArgumentError, match="computes forward at"):
        conv.choose_forward(g, "ieee", sms=1, variant="tc")
    with pytest.raises(ArgumentError, match="config must be one of"):
        conv.choose_forward(g, "ieee", sms=1, variant="simt", config="256x256")
    with pytest.raises(ArgumentError, match="splits must be >= 1"):
        conv.choose_wgrad(g, "ieee", sms=1, splits=0)
    with pytest.raises(ShapeError, match="over 2"):
        g_of((70000, 3, 128, 128), (4, 3, 3, 3))
    with pytest.raises(ShapeError, match="does not fit"):
        g_of((1, 3, 2, 2), (4, 3, 5, 5))


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


# (x shape, w shape, stride, padding, dilation)
GPU_FIXED = (
    ((1, 1, 29, 31), (1, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((4, 3, 67, 61), (16, 3, 7, 7), (2, 2), (3, 3), (1, 1)),
    ((3, 16, 31, 29), (33, 16, 3, 3), (3, 3), (1, 2), (1, 1)),
    ((2, 37, 23, 19), (70, 37, 3, 3), (1, 1), (2, 2), (2, 2)),
    ((5, 64, 13, 13), (129, 64, 1, 1), (1, 1), (0, 0), (1, 1)),
    ((2, 8, 17, 13), (6, 8, 5, 3), (2, 3), (2, 0), (2, 1)),
    ((64, 1, 28, 28), (6, 1, 5, 5), (1, 1), (0, 0), (1, 1)),
)


def random_configs(count: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        R, S = (int(v) for v in rng.choice([1, 2, 3, 5, 7], 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        padding = tuple(int(v) for v in rng.integers(0, 4, 2))
        N, C, K = int(rng.choice([1, 2, 5])), int(rng.choice([1, 3, 8, 37])), int(rng.choice([1, 7, 64, 97]))
        H, W = (int(v) for v in rng.choice([5, 7, 13, 17, 31], 2))
        P = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) // stride[0] + 1
        Q = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) // stride[1] + 1
        if P >= 1 and Q >= 1:
            configs.append(((N, C, H, W), (K, C, R, S), stride, padding, dilation))
    return tuple(configs)


GPU_CONFIGS = GPU_FIXED + random_configs(8)


GPU_IDS = [f"x{'x'.join(map(str, x))}-w{'x'.join(map(str, w))}-s{s[0]}{s[1]}-p{p[0]}{p[1]}-d{d[0]}{d[1]}"
           for x, w, s, p, d in GPU_CONFIGS]


FORWARD = [(v, p, c.name if c else None) for v, variant in conv.VARIANTS.items() if "forward" in variant.passes
           for p in variant.passes["forward"] for c in (conv.CONFIGS[v] or (None,))]


BACKWARD = [(pass_, v, p) for pass_ in ("dgrad", "wgrad") for v, variant in conv.VARIANTS.items()
            if pass_ in variant.passes for p in variant.passes[pass_]]


def gpu_geometry(config):
    _, _, stride, padding, dilation = config
    return dict(stride=stride, padding=padding, dilation=dilation)


def gpu_inputs(config, seed=3):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, *_ = config
    x, weight, bias = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, w_shape[0])
    y = R.conv2d(x, weight, bias, activation="relu", **gpu_geometry(config)).astype(np.float32)
    return x, weight, bias, y, random_array(rng, y.shape)


def nan(cp, shape):
    return cp.full(shape, np.nan, dtype=np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=GPU_IDS)
@pytest.mark.parametrize(("variant", "precision", "tile"), FORWARD,
                         ids=[f"{v}-{p}-{t or 'any'}" for v, p, t in FORWARD])
def test_forward_on_the_gpu(cp, variant, precision, tile, config):
    x, weight, bias, _, _ = gpu_inputs(config)
    dx, dw, db = cp.asarray(x), cp.asarray(weight), cp.asarray(bias)
    expected = R.conv2d(x, weight, bias, activation="relu", **gpu_geometry(config))
    runs = []
    for _ in range(2):
        out = nan(cp, expected.shape)
        conv.forward(dx, dw, db, relu=True, precision=precision, out=out, variant=variant, config=tile,
                     **gpu_geometry(config))
        runs.append(to_numpy(out))
    assert_close(runs[0], expected, dtype=np.float32, precision=precision)
    np.testing.assert_array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))


@pytest.mark.gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=GPU_IDS)
@pytest.mark.parametrize(("pass_", "variant", "precision"), BACKWARD, ids=[f"{a}-{v}-{p}" for a, v, p in BACKWARD])
def test_backward_passes_on_the_gpu(cp, pass_, variant, precision, config):
    x, weight, _, y, grad_y = gpu_inputs(config)
    expected = R.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **gpu_geometry(config))
    dgy, dy = cp.asarray(grad_y), cp.asarray(y)
    runs = []
    for _ in range(2):
        if pass_ == "dgrad":
            out = nan(cp, x.shape)
            conv.dgrad(dgy, cp.asarray(weight), x.shape, mask=dy, precision=precision, out=out, variant=variant,
                       **gpu_geometry(config))
        else:
            out = nan(cp, weight.shape)
            conv.wgrad(dgy, cp.asarray(x), weight.shape, mask=dy, precision=precision, out=out, variant=variant,
                       **gpu_geometry(config))
        runs.append(to_numpy(out))
    assert_close(runs[0], expected[0 if pass_ == "dgrad" else 1], dtype=np.float32, precision=precision)
    np.testing.assert_array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ("ieee", "tf32", "bf16", "fp16"))
@pytest.mark.parametrize("config", GPU_FIXED, ids=GPU_IDS[: len(GPU_FIXED)])
def test_public_ops_on_the_gpu(cp, precision, config):
    """F.conv2d / F.conv2d_backward on CuPy arrays: the backend's default choices at every precision."""
    x, weight, bias, _, _ = gpu_inputs(config)
    y = F.conv2d(cp.asarray(x), cp.asarray(weight), cp.asarray(bias), activation="relu", precision=precision,
                 **gpu_geometry(config))
    expected_y = R.conv2d(x, weight, bias, activation="relu", **gpu_geometry(config))
    assert_close(y, expected_y, dtype=np.float32, precision=precision)
    grad_y = random_array(np.random.default_rng(5), expected_y.shape)
    y_host = to_numpy(y)
    grads = F.conv2d_backward(cp.asarray(grad_y), cp.asarray(x), cp.asarray(weight), y=y, activation="relu",
                              precision=precision, **gpu_geometry(config))
    expected = R.conv2d_backward(grad_y, x, weight, y=y_host, activation="relu", **gpu_geometry(config))
    for got, want in zip(grads, expected):
        assert_close(got, want, dtype=np.float32, precision=precision)


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_device():
    """The same launches (same grids) on the GPU and on the CPU harness give the same numbers."""
    config = ((2, 3, 11, 7), (5, 3, 3, 3), (2, 1), (1, 1), (1, 2))
    x, weight, bias, y, grad_y = gpu_inputs(config)

    def calls(executor):
        xp = executor.xp
        dx, dw, db, dy, dgy = (xp.asarray(a) for a in (x, weight, bias, y, grad_y))
        return (
            conv.forward(dx, dw, db, relu=True, variant="simt", executor=executor, **gpu_geometry(config)),
            conv.forward(dx, dw, db, variant="naive", executor=executor, **gpu_geometry(config)),
            conv.dgrad(dgy, dw, x.shape, mask=dy, executor=executor, **gpu_geometry(config)),
            conv.wgrad(dgy, dx, weight.shape, mask=dy, splits=2, executor=executor, **gpu_geometry(config)),
        )

    errors = harness.cross_check(calls)
    assert len(errors) == 4


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@st.composite
def conv_case(draw, backend, *, precision: bool = False):
    """A convolution whose (dilated) kernel fits the padded input on both axes."""
    rng, dtype, prec = draw(common(backend, precision=precision))
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0]), 14))
    w = draw(st.integers(max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1]), 14))
    activation = draw(st.sampled_from([None, "relu"]))
    x = random_array(rng, (n, c, h, w), dtype)
    weight = random_array(rng, (k, c, r, s), dtype)
    bias = random_array(rng, (k,), dtype) if draw(st.booleans()) else None
    hyper = dict(stride=stride, padding=padding, dilation=dilation, activation=activation)
    # ints and pairs are both part of the contract
    for name in ("stride", "padding", "dilation"):
        if hyper[name][0] == hyper[name][1] and draw(st.booleans()):
            hyper[name] = hyper[name][0]
    return rng, dtype, prec, x, weight, bias, hyper


@property_test()
def test_conv2d_matches_reference(backend, data):
    _, dtype, precision, x, w, b, hyper = data.draw(conv_case(backend, precision=True))
    y = F.conv2d(backend.put(x), backend.put(w), backend.put(b), precision=precision, **hyper)
    geometry = {name: hyper[name] for name in ("stride", "padding", "dilation")}
    magnitude = R.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), **geometry)
    assert_product_close(y, R.conv2d(x, w, b, **hyper), magnitude, dtype=dtype, precision=precision)


@property_test()
def test_conv2d_backward_matches_reference(backend, data):
    rng, dtype, _, x, w, b, hyper = data.draw(conv_case(backend))
    y = R.conv2d(x, w, b, **hyper).astype(dtype)
    grad_y = random_array(rng, y.shape, dtype)
    got = F.conv2d_backward(backend.put(grad_y), backend.put(x), backend.put(w), y=backend.put(y), **hyper)
    want = R.conv2d_backward(grad_y, x, w, y=y, **hyper)
    for g, ref in zip(got, want):
        assert_close(g, ref, dtype=dtype)


@INVALID_OK
@property_test()
def test_conv2d_specials_match_reference(backend, data):
    rng, dtype, _, x, w, b, hyper = data.draw(conv_case(backend))
    x = with_specials(rng, x.shape, dtype, data.draw(st.integers(1, 3)))
    y = F.conv2d(backend.put(x), backend.put(w), backend.put(b), **hyper)
    assert_same_specials(y, R.conv2d(x, w, b, **hyper), dtype=dtype)


@st.composite
def winograd_case(draw, backend, specials):
    """3x3, stride 1, >= 16 channels: the shape class the CPU backend computes by Winograd F(2x2,3x3)."""
    rng, dtype, _ = draw(common(backend))
    n, c, k = draw(st.integers(1, 2)), draw(st.integers(16, 20)), draw(st.integers(1, 8))
    h, w = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    x = random_array(rng, (n, c, h, w), dtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=draw(st.integers(1, 3)), replace=False)] = rng.choice(np.array(specials, dtype))
    return dtype, x, random_array(rng, (k, c, 3, 3), dtype), draw(st.integers(0, 1))


@INVALID_OK
@property_test()
def test_conv2d_winograd_shapes_propagate_nan(backend, data):
    dtype, x, w, padding = data.draw(winograd_case(backend, [np.nan]))
    y = F.conv2d(backend.put(x), backend.put(w), padding=padding)
    assert_same_specials(y, R.conv2d(x, w, padding=padding), dtype=dtype)


@INVALID_OK
@property_test()
def test_conv2d_winograd_shapes_keep_infinities(backend, data):
    """Winograd's tile transforms subtract inputs: an inf there becomes inf - inf = NaN where direct
    convolution gives +-inf.  (Found by this test; the CPU backend now falls back to im2col on
    non-finite data.)"""
    dtype, x, w, padding = data.draw(winograd_case(backend, [np.inf, -np.inf]))
    y = F.conv2d(backend.put(x), backend.put(w), padding=padding)
    assert_same_specials(y, R.conv2d(x, w, padding=padding), dtype=dtype)


@INVALID_OK
@property_test()
def test_conv2d_backward_specials_match_reference(backend, data):
    if data.draw(st.booleans()):
        dtype, x, w, padding = data.draw(winograd_case(backend, [np.nan, np.inf, -np.inf]))
        hyper = dict(padding=padding)
    else:
        rng, dtype, _, x, w, _, hyper = data.draw(conv_case(backend))
        hyper["activation"] = None
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = R.conv2d(np.zeros(x.shape), w, **hyper).shape
    grad_y = with_specials(rng, shape, dtype, data.draw(st.integers(0, 2)))
    got = F.conv2d_backward(backend.put(grad_y), backend.put(x), backend.put(w), **hyper)
    for g, ref in zip(got, R.conv2d_backward(grad_y, x, w, **hyper)):
        assert_same_specials(g, ref, dtype=dtype)
