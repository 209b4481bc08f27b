"""The gemm stem (kernels/gemm.cu, gemm_tc.cu, gemm_cast.cu): matmul and linear, forward and backward.

Everything about them, executor by executor: the float64 reference by hand and
against finite differences; every check and bad input of dlgpu/cases/gemm.py on the CPU backend,
on the CPU harness and on a GPU; the CPU backend in float32 and float64 and its
tensor-core precision emulation; every registered variant (dlgpu.cuda.gemm.VARIANTS)
x tile configuration x layout x precision on the harness, each call checking which
kernel ran (so a silent fallback to the naive kernel cannot pass for a tiled one),
every kernel plain and under the sanitizers, and the launcher's choices; the
tensor-core kernels fed from 16-bit storage and their producer pass; the same
on a GPU at sizes the harness cannot afford, with bit-for-bit repeats and the
harness cross-checked against the device; bad input; and properties.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases import gemm as cases
from dlgpu.cpu.gemm import round_operand
from dlgpu.cuda import gemm, gemm_cast, gemm_wgmma
from dlgpu.errors import ArgumentError, DtypeError, ShapeError
from dlgpu.testing import (assert_away_from_kink, assert_close, bf16_bits, check_gradients, harness, random_array,
                           rel_error, same_bits, stored_values)
from dlgpu.testing.harness import HarnessExecutor
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.properties import (INVALID_OK, assert_product_close, assert_same_specials, common, dims,
                                      property_test, with_specials)
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]
LAYOUTS = list(itertools.product((False, True), repeat=2))  # (transpose_a, transpose_b)
LAYOUT_IDS = [gemm.layout_name(ta, tb) for ta, tb in LAYOUTS]
# (variant, precision, config) for every registered combination; naive has no configuration.  wgmma, which
# has kernels for tf32 in one layout only and runs clusters on a two-SM harness, is checked by
# tests/test_gemm_wgmma.py (every configuration, layout and precision, and its registry choice).
COMBOS = [
    (name, precision, config.name if config else None)
    for name, variant in gemm.VARIANTS.items() if name != "wgmma"
    for precision in variant.precisions
    for config in (gemm.CONFIGS[name] or (None,))
]
COMBO_IDS = [f"{v}-{p}-{c or 'any'}" for v, p, c in COMBOS]
# The largest relative error an "ieee" float32 result shows here is ~1e-7; each
# emulated precision must show at least this much more, or it was not applied.
MEASURABLE = {"tf32": 2e-5, "fp16": 2e-5, "bf16": 2e-4}


def nan_array(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# ---------------------------------------------------------------------------
# the reference
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
# every check and bad input of dlgpu/cases/gemm.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


MATMUL_SHAPES = [(1, 1, 1), (7, 13, 5), (64, 3, 65), (33, 67, 2)]  # (m, k, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_on_the_cpu(rng, dtype, transpose_a, transpose_b):
    for m, k, n in MATMUL_SHAPES:
        a = random_array(rng, (k, m) if transpose_a else (m, k), dtype)
        b = random_array(rng, (n, k) if transpose_b else (k, n), dtype)
        flags = dict(transpose_a=transpose_a, transpose_b=transpose_b)
        out = nan_array((m, n), dtype)
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
def test_linear_on_the_cpu(rng, dtype, activation, with_bias):
    for batch, fan_in, fan_out in [(1, 1, 1), (5, 13, 7), (67, 31, 65)]:
        x = random_array(rng, (batch, fan_in), dtype)
        w = random_array(rng, (fan_out, fan_in), dtype)
        bias = random_array(rng, (fan_out,), dtype) if with_bias else None
        out = nan_array((batch, fan_out), dtype)
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


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_precision_emulation_matmul_linear(rng, precision):
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


def test_precision_is_ignored_for_float64(rng):
    a = random_array(rng, (9, 17), np.float64)
    b = random_array(rng, (17, 5), np.float64)
    assert same_bits(F.matmul(a, b, precision="bf16"), F.matmul(a, b, precision="ieee"))


# ---------------------------------------------------------------------------
# the kernels on the CPU harness: every variant, configuration, layout and precision
# ---------------------------------------------------------------------------


# Tiled kernels need leading dimensions % 4 == 0 (else the launcher takes naive): sizes that
# are multiples of 4 but of no tile.  132 x 68: two block rows of a 128 tile, two block columns
# of a 64 tile; k = 52: several k tiles, so the 3-stage ring wraps; k = 4: one partial k tile.
TILED_SHAPES = ((4, 4, 4), (132, 68, 52))


# Anything goes for naive (and for the public path, which falls back to it): 1, primes.
ODD_SHAPES = ((1, 1, 1), (1, 7, 13), (13, 1, 5), (5, 3, 1), (37, 29, 67))


def operands(rng, m, n, k, ta, tb):
    a = random_array(rng, (k, m) if ta else (m, k))
    b = random_array(rng, (n, k) if tb else (k, n))
    return a, b


def launched_one(executor, prefix: str):
    """The one product kernel launched (the tc launcher's producer passes, family gemm_cast, aside)."""
    names = {kernel for family, kernel in executor.launched if family != gemm_cast.FAMILY}
    assert len(names) == 1 and next(iter(names)).startswith(prefix), names
    return next(iter(names))


def kernel_prefix(variant: str, config: str | None) -> str:
    return {"naive": "gemm_naive", "simt": f"gemm_simt_{config}_", "tc": f"gemm_tc_{config}_"}[variant]


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_product_matches_the_reference_on_the_harness(plain, rng, variant, precision, config, transpose_a, transpose_b):
    shapes = TILED_SHAPES + (ODD_SHAPES if variant == "naive" else ())
    layout = gemm.layout_name(transpose_a, transpose_b)
    for m, n, k in shapes:
        a, b = operands(rng, m, n, k, transpose_a, transpose_b)
        plain.launched.clear()
        out = np.full((m, n), np.nan, np.float32)
        c = gemm.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, out=out,
                      variant=variant, config=config, executor=plain)
        assert c is out
        kernel = launched_one(plain, kernel_prefix(variant, config))
        assert variant == "naive" or kernel.endswith(f"_{layout}_f32" if variant == "simt" else f"_{layout}")
        assert_close(c, R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), precision=precision)


@pytest.mark.parametrize(("variant", "precision"), (("simt", "ieee"), ("tc", "tf32")))
def test_grouped_raster_order_computes_every_tile_once(plain, rng, variant, precision):
    # 10 x 4 tiles of 64 x 64: one full band of 8 tile rows and a partial band of 2.
    a, b = operands(rng, 580, 196, 8, False, False)
    c = gemm.gemm(a, b, precision=precision, variant=variant, config="64x64", executor=plain)
    assert_close(c, R.matmul(a, b), precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_fused_bias_relu_in_one_launch(plain, rng, variant, precision, config):
    for batch, features_in, features_out in ((36, 20, 12), (5, 8, 132)):
        x = random_array(rng, (batch, features_in))
        weight = random_array(rng, (features_out, features_in))
        bias = random_array(rng, features_out)
        plain.launched.clear()
        y = gemm.linear(x, weight, bias, "relu", precision, None, variant=variant, config=config, executor=plain)
        launched_one(plain, "gemm_")
        expected = R.linear(x, weight, bias, activation="relu")
        assert_close(y, expected, precision=precision)
        assert np.all(y >= 0)
        y = gemm.linear(x, weight, bias, None, precision, None, variant=variant, config=config, executor=plain)
        assert_close(y, R.linear(x, weight, bias), precision=precision)


def test_relu_epilogue_lets_nan_through(plain):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    weight = np.eye(4, dtype=np.float32)
    bias = np.array([np.nan, -1.0, 0.0, -10.0], np.float32)
    for variant in ("naive", "simt"):
        y = gemm.linear(x, weight, bias, "relu", "ieee", None, variant=variant, executor=plain)
        assert np.isnan(y[0, 0]) and np.array_equal(y[0, 1:], [1.0, 3.0, 0.0])


@pytest.mark.parametrize(("m", "n", "k"), ODD_SHAPES + ((3, 5, 6),))
def test_unaligned_operands_fall_back_to_a_correct_kernel(plain, rng, m, n, k):
    a, b = operands(rng, m, n, k, False, False)
    plain.launched.clear()
    c = gemm.matmul(a, b, False, False, "ieee", None, executor=plain)
    assert launched_one(plain, "gemm_naive")
    assert_close(c, R.matmul(a, b))


@pytest.mark.parametrize(("m", "n", "k"), ODD_SHAPES[-2:])
def test_unaligned_operands_are_padded_for_the_tensor_cores(plain, rng, m, n, k):
    """Rows that are not a multiple of 16 bytes: the producer pass copies them into padded rows."""
    a, b = operands(rng, m, n, k, False, False)
    plain.launched.clear()
    c = gemm.matmul(a, b, False, False, "tf32", None, executor=plain)
    assert launched_one(plain, "gemm_tc_") and (gemm_cast.FAMILY, "cast_f32_f32") in plain.launched
    assert_close(c, R.matmul(a, b), precision="tf32")


def test_misaligned_pointer_falls_back(plain, rng):
    base = random_array(rng, 8 * 8 + 1)
    a = base[1:].reshape(8, 8)  # rows % 4 fine, base 4 bytes past a 16-byte boundary
    b = random_array(rng, (8, 4))
    assert not gemm.tile_ready(a) and gemm.tile_ready(b)
    plain.launched.clear()
    c = gemm.gemm(a, b, variant="simt", executor=plain)
    assert launched_one(plain, "gemm_naive")
    assert_close(c, R.matmul(a, b))


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("variant", list(gemm.VARIANTS))
def test_matmul_backward_on_the_harness(plain, rng, variant, transpose_a, transpose_b):
    precision = gemm.VARIANTS[variant].precisions[0]
    for m, n, k in ((36, 20, 12), (4, 8, 132)):
        a, b = operands(rng, m, n, k, transpose_a, transpose_b)
        grad_c = random_array(rng, (m, n))
        plain.launched.clear()
        grad_a, grad_b = gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision, variant=variant,
                                              executor=plain)
        assert {kernel.startswith(f"gemm_{variant}") for family, kernel in plain.launched
                if family != gemm_cast.FAMILY} == {True}
        expected_a, expected_b = R.matmul_backward(grad_c, a, b, transpose_a=transpose_a, transpose_b=transpose_b)
        assert grad_a.shape == a.shape and grad_b.shape == b.shape
        assert_close(grad_a, expected_a, precision=precision)
        assert_close(grad_b, expected_b, precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_linear_backward_masks_grad_y_inside_the_products(plain, rng, variant, precision, config):
    # Few output features: the bias gradient's finishing pass runs one 256-thread block per feature.
    batch, features_in, features_out = 36, 20, 12
    x = random_array(rng, (batch, features_in))
    weight = random_array(rng, (features_out, features_in))
    y = R.relu(random_array(rng, (batch, features_out))).astype(np.float32)  # about half masked
    grad_y = random_array(rng, (batch, features_out))
    plain.launched.clear()
    grad_x, grad_w, grad_b = gemm.linear_backward(grad_y, x, weight, y, "relu", precision, variant=variant,
                                                  executor=plain)
    gemm_kernels = {kernel for family, kernel in plain.launched if family in ("gemm", "gemm_tc")}
    if variant == "naive":
        assert gemm_kernels == {"gemm_naive_f32"}
    elif variant == "simt":
        assert all(k.endswith("_mask_f32") for k in gemm_kernels), gemm_kernels
        assert {k.split("_")[-3] for k in gemm_kernels} == {"nn", "tn"}
    else:  # one producer pass writes the masked grad_y that both products read (12 features: rows of 24
        # bytes at 16 bits, which a second pass pads to 32 for the 16-byte loads; no mask there)
        assert {k.split("_")[-1] for k in gemm_kernels} == {"nn", "tn"}
        storage = "f32" if precision == "tf32" else precision
        casts = {k for family, k in plain.launched if family == gemm_cast.FAMILY}
        assert f"cast_f32_{storage}" in casts and casts <= {f"cast_f32_{storage}", f"cast_{storage}_{storage}"}
    expected = R.linear_backward(grad_y, x, weight, y=y, activation="relu")
    for got, want in zip((grad_x, grad_w, grad_b), expected, strict=True):
        assert_close(got, want, precision=precision)
    # Without the activation nothing is masked: the results must differ from the masked ones.
    unmasked = gemm.linear_backward(grad_y, x, weight, None, None, precision, variant=variant, config=config,
                                    executor=plain)
    expected = R.linear_backward(grad_y, x, weight)
    for got, want in zip(unmasked, expected, strict=True):
        assert_close(got, want, precision=precision)
    assert not np.allclose(unmasked[0], grad_x)


def test_repeated_runs_give_identical_bits(plain, rng):
    a, b = operands(rng, 132, 20, 52, False, True)
    for variant, precision in (("simt", "ieee"), ("tc", "tf32"), ("tc", "bf16")):
        first = gemm.gemm(a, b, transpose_b=True, variant=variant, precision=precision, executor=plain)
        second = gemm.gemm(a, b, transpose_b=True, variant=variant, precision=precision, executor=plain)
        assert first.tobytes() == second.tobytes()


@pytest.mark.usefixtures("host_compiler")
@pytest.mark.parametrize("mode", ("asan", "tsan"))
def test_sanitized_fused_backward(rng, mode):
    """linear_backward end to end: both masked products and the masked bias gradient."""
    executor = HarnessExecutor(mode, multiprocessor_count=1)
    x, weight = random_array(rng, (12, 8)), random_array(rng, (4, 8))
    y = R.relu(random_array(rng, (12, 4))).astype(np.float32)
    grad_y = random_array(rng, (12, 4))
    got = gemm.linear_backward(grad_y, x, weight, y, "relu", "ieee", variant="simt", executor=executor)
    for g, want in zip(got, R.linear_backward(grad_y, x, weight, y=y, activation="relu"), strict=True):
        assert_close(g, want)


# ---------------------------------------------------------------------------
# the tensor-core GEMM fed from its storage type (kernels/gemm_tc.cu, tc_tile.cuh, gemm_cast.cu)
# ---------------------------------------------------------------------------
# The tests above run every variant x configuration x layout x precision from float32 arrays (bf16 and fp16
# through the producer pass).  Here: 16-bit operands read in place (no producer pass) across the edges of the
# largest tile, with C in 16 bits or fp32; tf32 operands rounded to nearest exactly once (what a truncating
# tensor core would get wrong by far more than an fp32 sum); the fused epilogue into 16-bit C; and the
# launcher's dtype rules.  Outputs poisoned, each call checking which kernels ran.


def stored(values, precision: str):
    """float32 values as a 16-bit precision stores them: bf16 bits (uint16) or float16."""
    return bf16_bits(values) if precision == "bf16" else values.astype(np.float16)


def operands16(rng, m, n, k, ta, tb, precision):
    a = stored(random_array(rng, (k, m) if ta else (m, k)), precision)
    b = stored(random_array(rng, (n, k) if tb else (k, n)), precision)
    return a, b


def product(a, b, ta, tb, precision):
    return R.matmul(stored_values(a, precision), stored_values(b, precision), transpose_a=ta, transpose_b=tb)


def kernels(executor, family):
    return {kernel for fam, kernel in executor.launched if fam == family}


@pytest.mark.parametrize("precision", ("bf16", "fp16"))
@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
def test_16_bit_operands_are_read_in_place_across_the_largest_tile(plain, rng, precision, transpose_a, transpose_b):
    # 136 x 264: two block rows of 128 and two block columns of 256; k = 104 halves (208-byte rows): 4 k-tiles
    # through 3 stages.  Leading dimensions are multiples of 8 halves, so nothing is staged.
    m, n, k = 136, 264, 104
    a, b = operands16(rng, m, n, k, transpose_a, transpose_b, precision)
    plain.launched.clear()
    c = gemm.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, config="128x256",
                  executor=plain)
    assert plain.launched == {("gemm_tc", f"gemm_tc_128x256_{gemm.layout_name(transpose_a, transpose_b)}")}
    assert c.dtype == a.dtype and c.shape == (m, n)
    assert_close(stored_values(c, precision), product(a, b, transpose_a, transpose_b, precision), dtype=np.float32,
                 precision=precision)


def tf32_rounded(values):
    """cvt.rna.tf32.f32: to nearest, ties away from zero, 10 mantissa bits."""
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
def test_tf32_operands_are_rounded_to_nearest(plain, rng, transpose_a, transpose_b):
    """Against the product of the rounded operands the error is the fp32 sum's alone (~1e-7); unrounded
    (truncated by the tensor cores) operands would be off by ~3e-4.  Covers the ldmatrix (k-contiguous) and
    the permuted LDS.64 (m/n-contiguous) tiles, and a tile of each 128-row half."""
    m, n, k = 150, 72, 40
    a = random_array(rng, (k, m) if transpose_a else (m, k))
    b = random_array(rng, (n, k) if transpose_b else (k, n))
    c = gemm.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision="tf32", variant="tc",
                  config="128x128", executor=plain)
    exact = R.matmul(tf32_rounded(a), tf32_rounded(b), transpose_a=transpose_a, transpose_b=transpose_b)
    assert rel_error(c, exact) < 1e-5
    assert rel_error(c, R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)) > 1e-5  # it is tf32


@pytest.mark.parametrize("precision", ("bf16", "fp16"))
def test_fused_epilogue_into_16_bit_outputs(plain, rng, precision):
    # N even: paired (and, in nt, 4-wide) stores; N odd: element by element at the row ends.
    for m, n, k in ((37, 130, 64), (64, 67, 24)):
        a, b = operands16(rng, m, n, k, False, True, precision)
        bias = random_array(rng, n)
        expected = R.relu(product(a, b, False, True, precision) + bias)
        c = gemm.gemm(a, b, transpose_b=True, bias=bias, relu=True, precision=precision, out_dtype=np.float32,
                      executor=plain)
        assert c.dtype == np.float32
        assert_close(c, expected, precision=precision)
        bias16 = stored(bias, precision)  # a bias in the operands' own type
        half = gemm.gemm(a, b, transpose_b=True, bias=bias16, relu=True, precision=precision, executor=plain)
        assert half.dtype == a.dtype
        expected16 = R.relu(product(a, b, False, True, precision) + stored_values(bias16, precision))
        assert_close(stored_values(half, precision), expected16, dtype=np.float32, precision=precision)
        assert (stored_values(half, precision) >= 0).all()


def test_16_bit_backward_products_keep_the_operands_dtype_and_layout(plain, rng):
    m, n, k = 24, 40, 16
    for transpose_a, transpose_b in LAYOUTS:
        a, b = operands16(rng, m, n, k, transpose_a, transpose_b, "fp16")
        grad_c = stored(random_array(rng, (m, n)), "fp16")
        grad_a, grad_b = gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, "fp16", executor=plain)
        expected = R.matmul_backward(grad_c.astype(np.float64), a.astype(np.float64), b.astype(np.float64),
                                       transpose_a=transpose_a, transpose_b=transpose_b)
        for got, operand, want in zip((grad_a, grad_b), (a, b), expected, strict=True):
            assert got.dtype == np.float16 and got.shape == operand.shape
            assert_close(got.astype(np.float64), want, dtype=np.float32, precision="fp16")


def test_mixed_operands_stage_only_the_float32_one(plain, rng):
    a = stored(random_array(rng, (40, 32)), "bf16")
    b = random_array(rng, (32, 48))
    plain.launched.clear()
    c = gemm.gemm(a, b, precision="bf16", out_dtype=np.float32, executor=plain)
    assert kernels(plain, gemm_cast.FAMILY) == {"cast_f32_bf16"}
    assert_close(c, R.matmul(stored_values(a, "bf16"), stored_values(bf16_bits(b), "bf16")), precision="bf16")


def test_the_launcher_refuses_what_the_kernels_cannot_do(plain, rng):
    a16, b16 = stored(random_array(rng, (8, 16)), "fp16"), stored(random_array(rng, (16, 8)), "fp16")
    bits_a, bits_b = a16.view(np.uint16), b16.view(np.uint16)
    a32 = random_array(rng, (8, 16))
    with pytest.raises(DtypeError, match="say which"):
        gemm.gemm(bits_a, bits_b, executor=plain)  # uint16 holds bf16 or fp16 bits
    with pytest.raises(DtypeError, match="own precision"):
        gemm.gemm(a16, b16, precision="bf16", executor=plain)
    with pytest.raises(DtypeError, match="own precision"):
        gemm.gemm(a16, b16, precision="tf32", executor=plain)
    with pytest.raises(ArgumentError, match="tensor-core variants"):
        gemm.gemm(a16, b16, variant="simt", executor=plain)
    with pytest.raises(DtypeError, match="C is float32"):
        gemm.gemm(a32, b16.astype(np.float32), precision="tf32", out_dtype=np.float16, executor=plain)
    with pytest.raises(DtypeError, match="C is float32"):
        gemm.gemm(a16, b16, out_dtype=np.float64, executor=plain)
    with pytest.raises(DtypeError, match="float32, float16, bfloat16 or uint16"):
        gemm.gemm(a16.astype(np.float64), b16.astype(np.float64), executor=plain)
    # The bits of fp16 values say what they are once the precision is named.
    c = gemm.gemm(bits_a, bits_b, precision="fp16", executor=plain)
    assert c.dtype == np.uint16
    assert_close(c.view(np.float16).astype(np.float64), product(a16, b16, False, False, "fp16"), dtype=np.float32,
                 precision="fp16")


# ---------------------------------------------------------------------------
# every kernel, plain and under the sanitizers (the cases declare the kernels they launch)
# ---------------------------------------------------------------------------


# Tiled kernels need every leading dimension % 4 == 0 (else the launcher takes naive):
# (M, N, K) not multiples of any tile, K not of the k-tile 8, and one tile-crossing shape.
KERNEL_GEMM_SHAPES = ((36, 20, 12), (132, 68, 4), (1, 4, 28))


def gemm_expected(a, b, transpose_a, transpose_b, bias=None, relu=False, mask_a=None):
    a = a if mask_a is None else np.where(mask_a > 0, a, 0)
    c = R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if bias is not None:
        c = c + bias
    return np.maximum(c, 0) if relu else c


def check_gemm_simt(config):
    def check(executor, rng):
        shapes = KERNEL_GEMM_SHAPES if executor.mode == "plain" else KERNEL_GEMM_SHAPES[:1]
        for m, n, k in shapes:
            for layout in gemm.LAYOUTS:
                ta, tb = layout[0] == "t", layout[1] == "t"
                a = random_array(rng, (k, m) if ta else (m, k))
                b = random_array(rng, (n, k) if tb else (k, n))
                bias = random_array(rng, n) if layout in ("nn", "tt") else None
                relu = layout in ("nt", "tt")
                c = gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=relu,
                                   out=np.full((m, n), np.nan, np.float32), variant="simt", config=config,
                                   executor=executor)
                assert_close(c, gemm_expected(a, b, ta, tb, bias, relu))
                if layout in gemm.MASK_LAYOUTS:
                    mask = random_array(rng, a.shape)
                    c = gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, mask_a=mask, variant="simt",
                                       config=config, executor=executor)
                    assert_close(c, gemm_expected(a, b, ta, tb, mask_a=mask))

    return check


def check_gemm_tc(config):
    def check(executor, rng):
        # Each precision is its own build; the sanitizers see tf32 (the harness tests above: the rest).
        precisions = ("tf32", "bf16", "fp16") if executor.mode == "plain" else ("tf32",)
        m, n, k = KERNEL_GEMM_SHAPES[0]
        for precision in precisions:
            for layout in gemm.LAYOUTS:
                ta, tb = layout[0] == "t", layout[1] == "t"
                a = random_array(rng, (k, m) if ta else (m, k))
                b = random_array(rng, (n, k) if tb else (k, n))
                bias = random_array(rng, n)
                c = gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=True, precision=precision,
                                   variant="tc", config=config, executor=executor)
                assert_close(c, gemm_expected(a, b, ta, tb, bias, True), precision=precision)
                if layout in gemm.MASK_LAYOUTS:
                    mask = random_array(rng, a.shape)
                    c = gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, mask_a=mask, precision=precision,
                                       variant="tc", config=config, executor=executor)
                    assert_close(c, gemm_expected(a, b, ta, tb, mask_a=mask), precision=precision)

    return check


def check_gemm_naive(executor, rng):
    shapes = ((1, 1, 1), (5, 7, 3), (17, 3, 33)) if executor.mode == "plain" else ((17, 3, 33),)
    for m, n, k in shapes:  # any shape: nothing needs alignment
        for layout in gemm.LAYOUTS:
            ta, tb = layout[0] == "t", layout[1] == "t"
            a = random_array(rng, (k, m) if ta else (m, k))
            b = random_array(rng, (n, k) if tb else (k, n))
            bias, mask = random_array(rng, n), random_array(rng, a.shape)
            c = gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=True, mask_a=mask,
                               variant="naive", executor=executor)
            assert_close(c, gemm_expected(a, b, ta, tb, bias, True, mask))


def check_gemm_wgmma(executor, rng):
    # Each kernel once (the sanitizers start 384 threads slowly): partial tiles, rows of 65 halves (padded for
    # TMA).  tests/test_gemm_wgmma.py has more shapes, the epilogue and planted bugs.
    m, n, k = 67, 33, 65
    for name in gemm_wgmma.kernel_names():
        config, layout, precision = name.split("_")[2:]
        ta, tb = layout[0] == "t", layout[1] == "t"
        store = {"bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16), "tf32": lambda v: v}[precision]
        a = store(random_array(rng, (k, m) if ta else (m, k)))
        b = store(random_array(rng, (n, k) if tb else (k, n)))
        c = gemm_wgmma.gemm(a, b, transpose_a=ta, transpose_b=tb, precision=precision, config=config,
                                 executor=executor)
        expected = R.matmul(stored_values(a, precision), stored_values(b, precision), transpose_a=ta,
                              transpose_b=tb)
        assert_close(c, expected, precision=precision)


def stored_as(values, storage: str) -> np.ndarray:
    """float32 values in a storage's array form, rounded to nearest even as the kernels round."""
    return {"f32": lambda v: v, "bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16)}[storage](values)


def check_gemm_cast(executor, rng):
    # 37 x 13: rows padded to 16 (element by element); 5 x 64: 16-byte runs; plain only (the sanitizers start
    # threads slowly), 1 x 3001: one flat run with a tail.
    shapes = ((37, 13), (5, 64), (1, 3001)) if executor.mode == "plain" else ((37, 13), (5, 64))
    for index, (rows, cols) in enumerate(shapes):
        values, mask = random_array(rng, (rows, cols)), random_array(rng, (rows, cols))
        for src, dst in gemm_cast.KERNELS:
            source, source_mask = stored_as(values, src), stored_as(mask, src)
            exact = stored_values(source, src).astype(np.float32)
            masks = (source_mask, None) if index == 0 else (source_mask,)
            for given in masks:
                want = exact if given is None else np.where(stored_values(given, src) > 0, exact, 0).astype(np.float32)
                copy, got_cols = gemm_cast.cast(source, dst, src_storage=src, mask=given, row_multiple=8,
                                                zero_padding=True, executor=executor)
                assert got_cols == cols and copy.shape == (rows, -(-cols // 8) * 8)
                # Bit for bit: conversions round to nearest even, copies and widenings are exact.
                np.testing.assert_array_equal(copy[:, :cols].view(np.uint8), stored_as(want, dst).view(np.uint8))
                assert not copy[:, cols:].view(np.uint8).any()


KERNEL_CASES = (
    KernelCase("gemm_naive", "gemm", ("gemm_naive_f32",), check_gemm_naive),
    *(
        KernelCase(f"gemm_simt_{config.name}", "gemm",
                   (*(f"gemm_simt_{config.name}_{layout}_f32" for layout in gemm.LAYOUTS),
                    *(f"gemm_simt_{config.name}_{layout}_mask_f32" for layout in gemm.MASK_LAYOUTS)),
                   check_gemm_simt(config.name))
        for config in gemm.SIMT_CONFIGS
    ),
    *(
        KernelCase(f"gemm_tc_{config.name}", "gemm_tc",
                   tuple(k for k in gemm.kernel_names("tc") if k.startswith(f"gemm_tc_{config.name}_")),
                   check_gemm_tc(config.name))
        for config in gemm.TC_CONFIGS
    ),
    KernelCase("gemm_wgmma", "gemm_wgmma", tuple(gemm_wgmma.kernel_names()), check_gemm_wgmma),
    KernelCase("gemm_cast", gemm_cast.FAMILY, tuple(gemm_cast.KERNELS.values()), check_gemm_cast),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("gemm", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the launcher's choices (no kernels run)
# ---------------------------------------------------------------------------


def plan(m, n, k, *, ta=False, tb=False, precision="ieee", masked=False, aligned=True, sms=132, **kw):
    return gemm.choose(m, n, k, transpose_a=ta, transpose_b=tb, precision=precision, masked=masked,
                       aligned=aligned, sms=sms, **kw)


def test_default_variant_follows_the_precision():
    assert plan(256, 256, 256).variant == "simt"
    for precision in ("tf32", "bf16", "fp16"):
        chosen = plan(256, 256, 256, precision=precision)
        assert chosen.variant == "tc"
        assert chosen.defines == (("GEMM_TC_PRECISION", precision),)


def test_tile_configuration_by_shape():
    # Large square: the biggest tile still gives several waves.
    assert plan(4096, 4096, 4096).config.name == "128x128"
    assert plan(8192, 8192, 8192, precision="bf16").config.name == "128x256"
    assert plan(4096, 4096, 4096, precision="tf32").config.name == "128x256"
    assert plan(2048, 2048, 4096, precision="fp16").config.name == "128x128"
    # Small products: smaller tiles, so more blocks share the device.
    assert plan(256, 64, 576).config.name == "64x64"
    assert plan(128, 512, 784).config.name == "64x64"
    # Tall and skinny: a 128-wide tile would be mostly idle on N = 40.
    assert plan(65536, 40, 512).config.name == "128x64"
    # Grid: columns of N tiles, rows of M tiles, threads as the configuration says.
    chosen = plan(300, 200, 7, sms=1)
    assert chosen.grid == (math_ceil(200, chosen.config.block_n), math_ceil(300, chosen.config.block_m), 1)
    assert chosen.block == (chosen.config.threads, 1, 1)


def math_ceil(a, b):
    return -(-a // b)


def test_fallbacks_to_naive():
    assert plan(64, 64, 64, aligned=False).variant == "naive"
    for ta, tb in LAYOUTS:
        chosen = plan(64, 64, 64, ta=ta, tb=tb, masked=True)
        assert (chosen.variant == "naive") == (gemm.layout_name(ta, tb) not in gemm.MASK_LAYOUTS)
        # tc takes everything: its launcher stages what the kernels cannot read directly.
        chosen = plan(64, 64, 64, ta=ta, tb=tb, masked=True, aligned=False, precision="tf32")
        assert chosen.variant == "tc" and chosen.kernel == f"gemm_tc_64x64_{gemm.layout_name(ta, tb)}"
    naive = plan(33, 17, 5, variant="naive")
    assert naive.kernel == "gemm_naive_f32" and naive.grid == (2, 3, 1) and naive.block == (16, 16, 1)


def test_tc_shared_memory_fits_every_target():
    # sm_86/sm_89 allow at most 99 KB of dynamic shared memory per block.
    for config in gemm.TC_CONFIGS:
        for (ta, tb), precision in itertools.product(LAYOUTS, ("tf32", "bf16", "fp16")):
            size = gemm.tc_shared_bytes(config, ta, tb, precision)
            assert size <= 99 * 1024
            assert plan(512, 512, 64, ta=ta, tb=tb, precision=precision, config=config.name).shared_mem == size
    # 16-bit tiles: 3 stages x (128 + 256) rows x 32 halves, swizzled without padding; tf32 tiles stored
    # n-contiguous (B in nn) are 16 rows of k of 256 + 8 floats.
    assert gemm.tc_shared_bytes(gemm.TC_CONFIGS[0], False, True, "bf16") == 3 * 384 * 32 * 2
    assert gemm.tc_shared_bytes(gemm.TC_CONFIGS[0], False, False, "tf32") == 3 * (128 * 64 + 16 * 264 * 4)


def test_registry_names_every_kernel():
    for family in ("gemm", "gemm_tc", "gemm_wgmma"):
        in_source = set(harness.family_kernels(family))
        registered = {k for name, v in gemm.VARIANTS.items() if v.family == family for k in gemm.kernel_names(name)}
        assert in_source == registered


def test_bad_requests_are_refused(plain, rng):
    a, b = random_array(rng, (4, 8)), random_array(rng, (8, 4))
    with pytest.raises(ArgumentError, match="variant must be one of"):
        gemm.gemm(a, b, variant="cublas", executor=plain)
    with pytest.raises(ArgumentError, match="computes"):
        gemm.gemm(a, b, variant="simt", precision="bf16", executor=plain)
    with pytest.raises(ArgumentError, match="config must be one of"):
        gemm.gemm(a, b, variant="simt", config="256x256", executor=plain)
    with pytest.raises(ShapeError, match="inner dimensions"):
        gemm.gemm(a, a, executor=plain)
    with pytest.raises(ShapeError, match="bias"):
        gemm.gemm(a, b, bias=random_array(rng, 5), executor=plain)
    with pytest.raises(ShapeError, match="mask_a"):
        gemm.gemm(a, b, mask_a=b, executor=plain)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


# Multiples of 4 (the tiled kernels' alignment rule), of no tile: partial tiles on every edge.
GPU_TILED_SHAPES = ((4, 4, 4), (260, 132, 516), (1028, 516, 1000), (36, 2052, 68))


GPU_ODD_SHAPES = ((1, 1, 1), (1, 257, 3), (127, 129, 65), (509, 263, 1021))


def device_operands(cp, rng, m, n, k, ta, tb):
    a = random_array(rng, (k, m) if ta else (m, k))
    b = random_array(rng, (n, k) if tb else (k, n))
    return a, b, cp.asarray(a), cp.asarray(b)


@pytest.mark.gpu
@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_product_matches_the_reference_on_the_gpu(cp, poison, rng, variant, precision, config, transpose_a,
                                                  transpose_b):
    prefix = {"naive": "gemm_naive", "simt": f"gemm_simt_{config}_", "tc": f"gemm_tc_{config}_"}[variant]
    for m, n, k in GPU_TILED_SHAPES + (GPU_ODD_SHAPES if variant == "naive" else ()):
        a, b, a_d, b_d = device_operands(cp, rng, m, n, k, transpose_a, transpose_b)
        poison.launched.clear()
        c = gemm.gemm(a_d, b_d, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision,
                      variant=variant, config=config, executor=poison)
        products = [k for k in poison.launched if not k.startswith("cast_")]  # the tc producer passes aside
        assert len(products) == 1 and products[0].startswith(prefix), poison.launched
        assert_close(c, R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), precision=precision)


@pytest.mark.gpu
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_linear_fused_epilogue_is_one_launch(cp, poison, rng, variant, precision, config):
    for batch, features_in, features_out in ((256, 784, 512), (100, 36, 12)):
        x, weight = random_array(rng, (batch, features_in)), random_array(rng, (features_out, features_in))
        bias = random_array(rng, features_out)
        poison.launched.clear()
        y = gemm.linear(cp.asarray(x), cp.asarray(weight), cp.asarray(bias), "relu", precision, None,
                        variant=variant, config=config, executor=poison)
        assert len([k for k in poison.launched if not k.startswith("cast_")]) == 1, poison.launched
        assert_close(y, R.linear(x, weight, bias, activation="relu"), precision=precision)


@pytest.mark.gpu
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_backward_passes_on_the_gpu(cp, poison, rng, variant, precision, config):
    kw = dict(variant=variant, config=config, executor=poison)
    for ta, tb in LAYOUTS:
        a, b, a_d, b_d = device_operands(cp, rng, 132, 68, 260, ta, tb)
        grad_c = random_array(rng, (132, 68))
        got = gemm.matmul_backward(cp.asarray(grad_c), a_d, b_d, ta, tb, precision, **kw)
        for g, want in zip(got, R.matmul_backward(grad_c, a, b, transpose_a=ta, transpose_b=tb), strict=True):
            assert_close(g, want, precision=precision)
    x, weight = random_array(rng, (256, 784)), random_array(rng, (512, 784))
    y = R.relu(random_array(rng, (256, 512))).astype(np.float32)
    grad_y = random_array(rng, (256, 512))
    poison.launched.clear()
    got = gemm.linear_backward(cp.asarray(grad_y), cp.asarray(x), cp.asarray(weight), cp.asarray(y), "relu",
                               precision, **kw)
    if variant == "simt":
        assert [k for k in poison.launched if k.startswith("gemm")] == [
            f"gemm_{variant}_{config}_nn_mask_f32", f"gemm_{variant}_{config}_tn_mask_f32"]
    elif variant == "tc":  # one producer pass masks grad_y for both products (as on the harness)
        assert [k.split("_")[-1] for k in poison.launched if k.startswith("gemm")] == ["nn", "tn"], poison.launched
    for g, want in zip(got, R.linear_backward(grad_y, x, weight, y=y, activation="relu"), strict=True):
        assert_close(g, want, precision=precision)


@pytest.mark.gpu
def test_tiled_kernels_agree_with_the_naive_oracle_at_size(cp, rng):
    a, b = cp.asarray(random_array(rng, (2048, 1500))), cp.asarray(random_array(rng, (2048, 1028)))
    oracle = gemm.gemm(a, b, transpose_a=True, variant="naive")
    assert rel_error(gemm.gemm(a, b, transpose_a=True, variant="simt"), oracle.get()) <= 5e-5
    for precision in ("tf32", "bf16", "fp16"):
        c = gemm.gemm(a, b, transpose_a=True, variant="tc", precision=precision)
        assert rel_error(c, oracle.get()) <= {"tf32": 2e-3, "fp16": 2e-3, "bf16": 1e-2}[precision]


@pytest.mark.gpu
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_two_runs_give_the_same_bits(cp, rng, variant, precision, config):
    a, b = cp.asarray(random_array(rng, (1028, 516))), cp.asarray(random_array(rng, (1000, 516)))
    first = gemm.gemm(a, b, transpose_b=True, precision=precision, variant=variant, config=config).get()
    second = gemm.gemm(a, b, transpose_b=True, precision=precision, variant=variant, config=config).get()
    assert first.tobytes() == second.tobytes()


@pytest.mark.gpu
def test_public_api_on_cupy_arrays(cp, rng):
    a, b = random_array(rng, (300, 200)), random_array(rng, (200, 100))
    assert_close(F.matmul(cp.asarray(a), cp.asarray(b)), R.matmul(a, b))
    assert_close(F.matmul(cp.asarray(a), cp.asarray(b), precision="bf16"), R.matmul(a, b), precision="bf16")
    x, weight, bias = random_array(rng, (64, 200)), random_array(rng, (30, 200)), random_array(rng, 30)
    y = F.linear(cp.asarray(x), cp.asarray(weight), cp.asarray(bias), activation="relu")
    assert_close(y, R.linear(x, weight, bias, activation="relu"))
    grad_y = random_array(rng, (64, 30))
    got = F.linear_backward(cp.asarray(grad_y), cp.asarray(x), cp.asarray(weight), y=y, activation="relu")
    for g, want in zip(got, R.linear_backward(grad_y, x, weight, y=y.get(), activation="relu"), strict=True):
        assert_close(g, want)


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu(cp):
    """Same launches on both executors: validates the harness's mma.sync fragment layouts too."""
    def calls(executor):
        rng = np.random.default_rng(11)
        xp = executor.xp
        a, b, mask = (xp.asarray(random_array(rng, s)) for s in ((36, 20), (20, 12), (36, 20)))
        outputs = [gemm.gemm(a, b, variant="naive", mask_a=mask, executor=executor)]
        # fp16 shares bf16's path (ldmatrix, swizzle) but for one conversion: one harness build fewer.
        for variant, precision in (("simt", "ieee"), ("tc", "tf32"), ("tc", "bf16")):
            outputs.append(gemm.gemm(a, b, precision=precision, variant=variant, config="64x64", mask_a=mask,
                                     bias=b[0], relu=True, executor=executor))
        return tuple(outputs)

    errors = harness.cross_check(calls)
    assert len(errors) == 4


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@property_test()
def test_matmul_matches_reference(backend, data):
    rng, dtype, precision = data.draw(common(backend, precision=True))
    m, k, n = data.draw(dims), data.draw(dims), data.draw(dims)
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    a = random_array(rng, (k, m) if ta else (m, k), dtype)
    b = random_array(rng, (n, k) if tb else (k, n), dtype)
    out = F.matmul(backend.put(a), backend.put(b), transpose_a=ta, transpose_b=tb, precision=precision)
    assert out.shape == (m, n) and out.dtype == dtype
    ref = R.matmul(a, b, transpose_a=ta, transpose_b=tb)
    magnitude = R.matmul(np.abs(a), np.abs(b), transpose_a=ta, transpose_b=tb)
    assert_product_close(out, ref, magnitude, dtype=dtype, precision=precision)


@property_test()
def test_matmul_backward_matches_reference(backend, data):
    rng, dtype, _ = data.draw(common(backend))
    m, k, n = data.draw(dims), data.draw(dims), data.draw(dims)
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    a = random_array(rng, (k, m) if ta else (m, k), dtype)
    b = random_array(rng, (n, k) if tb else (k, n), dtype)
    grad_c = random_array(rng, (m, n), dtype)
    got = F.matmul_backward(backend.put(grad_c), backend.put(a), backend.put(b), transpose_a=ta, transpose_b=tb)
    want = R.matmul_backward(grad_c, a, b, transpose_a=ta, transpose_b=tb)
    for g, w in zip(got, want):
        assert_close(g, w, dtype=dtype)


@st.composite
def linear_case(draw, backend):
    rng, dtype, precision = draw(common(backend, precision=True))
    batch, fan_in, fan_out = draw(dims), draw(dims), draw(dims)
    with_bias = draw(st.booleans())
    activation = draw(st.sampled_from([None, "relu"]))
    x = random_array(rng, (batch, fan_in), dtype)
    w = random_array(rng, (fan_out, fan_in), dtype)
    b = random_array(rng, (fan_out,), dtype) if with_bias else None
    return rng, dtype, precision, x, w, b, activation


@property_test()
def test_linear_matches_reference(backend, data):
    _, dtype, precision, x, w, b, activation = data.draw(linear_case(backend))
    y = F.linear(backend.put(x), backend.put(w), backend.put(b), activation=activation, precision=precision)
    magnitude = R.linear(np.abs(x), np.abs(w), None if b is None else np.abs(b))
    assert_product_close(y, R.linear(x, w, b, activation=activation), magnitude, dtype=dtype, precision=precision)


@property_test()
def test_linear_backward_matches_reference(backend, data):
    rng, dtype, _, x, w, b, activation = data.draw(linear_case(backend))
    y = R.linear(x, w, b, activation=activation).astype(dtype)  # the forward output, for the ReLU mask
    grad_y = random_array(rng, y.shape, dtype)
    put = backend.put
    got = F.linear_backward(put(grad_y), put(x), put(w), y=put(y), activation=activation)
    want = R.linear_backward(grad_y, x, w, y=y, activation=activation)
    for g, ref in zip(got, want):
        assert_close(g, ref, dtype=dtype)


@INVALID_OK
@property_test()
def test_matmul_specials_match_reference(backend, data):
    rng, dtype, _ = data.draw(common(backend))
    m, k, n = data.draw(dims), data.draw(dims), data.draw(dims)
    a = with_specials(rng, (m, k), dtype, data.draw(st.integers(0, 3)))
    b = with_specials(rng, (k, n), dtype, data.draw(st.integers(0, 3)))
    assert_same_specials(F.matmul(backend.put(a), backend.put(b)), R.matmul(a, b), dtype=dtype)


@INVALID_OK
@property_test()
def test_linear_backward_specials_match_reference(backend, data):
    rng, dtype, _, x, w, b, _ = data.draw(linear_case(backend))
    x = with_specials(rng, x.shape, dtype, data.draw(st.integers(0, 2)))
    grad_y = with_specials(rng, (x.shape[0], w.shape[0]), dtype, data.draw(st.integers(0, 2)))
    got = F.linear_backward(backend.put(grad_y), backend.put(x), backend.put(w))
    for g, ref in zip(got, R.linear_backward(grad_y, x, w)):
        assert_same_specials(g, ref, dtype=dtype)
