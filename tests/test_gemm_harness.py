"""The GEMM kernels on the CPU harness against dlgpu.reference, and the launcher's choices.

Every registered variant (dlgpu.cuda.gemm.VARIANTS) x tile configuration x layout x
precision runs through ``HarnessExecutor("plain")`` on small odd shapes, outputs
poisoned (the harness's ``xp.empty`` fills with NaN; ``out=`` arrays are NaN-filled
here), and each call checks which kernel actually ran, so a silent fallback to the
naive kernel cannot pass for a tiled one.  The sanitizer runs (ASan, TSan) of every
GEMM kernel are the gemm cases of tests/test_kernels_harness.py; here the fused
linear backward runs sanitized end to end.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.cuda import gemm
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.testing import assert_close, harness, random_array
from dlgpu.testing.harness import HarnessExecutor

LAYOUTS = list(itertools.product((False, True), repeat=2))  # (transpose_a, transpose_b)
LAYOUT_IDS = [gemm.layout_name(ta, tb) for ta, tb in LAYOUTS]
# (variant, precision, config) for every registered combination; naive has no configuration.
COMBOS = [
    (name, precision, config.name if config else None)
    for name, variant in gemm.VARIANTS.items()
    for precision in variant.precisions
    for config in (gemm.CONFIGS[name] or (None,))
]
COMBO_IDS = [f"{v}-{p}-{c or 'any'}" for v, p, c in COMBOS]

# Tiled kernels need leading dimensions % 4 == 0 (else the launcher takes naive): sizes that
# are multiples of 4 but of no tile.  132 x 68: two block rows of a 128 tile, two block columns
# of a 64 tile; k = 52: several k tiles, so the 3-stage ring wraps; k = 4: one partial k tile.
TILED_SHAPES = ((4, 4, 4), (132, 68, 52))
# Anything goes for naive (and for the public path, which falls back to it): 1, primes.
ODD_SHAPES = ((1, 1, 1), (1, 7, 13), (13, 1, 5), (5, 3, 1), (37, 29, 67))


# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def plain():
    return HarnessExecutor("plain", multiprocessor_count=1)


def operands(rng, m, n, k, ta, tb):
    a = random_array(rng, (k, m) if ta else (m, k))
    b = random_array(rng, (n, k) if tb else (k, n))
    return a, b


def launched_one(executor, prefix: str):
    """The one product kernel launched (the tc launcher's producer passes, family cast, aside)."""
    names = {kernel for family, kernel in executor.launched if family != "cast"}
    assert len(names) == 1 and next(iter(names)).startswith(prefix), names
    return next(iter(names))


def kernel_prefix(variant: str, config: str | None) -> str:
    return {"naive": "gemm_naive", "simt": f"gemm_simt_{config}_", "tc": f"gemm_tc_{config}_"}[variant]


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_product_matches_the_reference(plain, rng, variant, precision, config, transpose_a, transpose_b):
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
        assert_close(c, ref.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), precision=precision)


@pytest.mark.parametrize(("variant", "precision"), (("simt", "ieee"), ("tc", "tf32")))
def test_grouped_raster_order_computes_every_tile_once(plain, rng, variant, precision):
    # 10 x 4 tiles of 64 x 64: one full band of 8 tile rows and a partial band of 2.
    a, b = operands(rng, 580, 196, 8, False, False)
    c = gemm.gemm(a, b, precision=precision, variant=variant, config="64x64", executor=plain)
    assert_close(c, ref.matmul(a, b), precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_fused_bias_relu_in_one_launch(plain, rng, variant, precision, config):
    for batch, features_in, features_out in ((36, 20, 12), (5, 8, 132)):
        x = random_array(rng, (batch, features_in))
        weight = random_array(rng, (features_out, features_in))
        bias = random_array(rng, features_out)
        plain.launched.clear()
        y = gemm.linear(x, weight, bias, "relu", precision, None, variant=variant, config=config, executor=plain)
        launched_one(plain, "gemm_")
        expected = ref.linear(x, weight, bias, activation="relu")
        assert_close(y, expected, precision=precision)
        assert np.all(y >= 0)
        y = gemm.linear(x, weight, bias, None, precision, None, variant=variant, config=config, executor=plain)
        assert_close(y, ref.linear(x, weight, bias), precision=precision)


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
    assert_close(c, ref.matmul(a, b))


@pytest.mark.parametrize(("m", "n", "k"), ODD_SHAPES[-2:])
def test_unaligned_operands_are_padded_for_the_tensor_cores(plain, rng, m, n, k):
    """Rows that are not a multiple of 16 bytes: the producer pass copies them into padded rows."""
    a, b = operands(rng, m, n, k, False, False)
    plain.launched.clear()
    c = gemm.matmul(a, b, False, False, "tf32", None, executor=plain)
    assert launched_one(plain, "gemm_tc_") and ("cast", "cast_f32_f32") in plain.launched
    assert_close(c, ref.matmul(a, b), precision="tf32")


def test_misaligned_pointer_falls_back(plain, rng):
    base = random_array(rng, 8 * 8 + 1)
    a = base[1:].reshape(8, 8)  # rows % 4 fine, base 4 bytes past a 16-byte boundary
    b = random_array(rng, (8, 4))
    assert not gemm.tile_ready(a) and gemm.tile_ready(b)
    plain.launched.clear()
    c = gemm.gemm(a, b, variant="simt", executor=plain)
    assert launched_one(plain, "gemm_naive")
    assert_close(c, ref.matmul(a, b))


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("variant", list(gemm.VARIANTS))
def test_matmul_backward(plain, rng, variant, transpose_a, transpose_b):
    precision = gemm.VARIANTS[variant].precisions[0]
    for m, n, k in ((36, 20, 12), (4, 8, 132)):
        a, b = operands(rng, m, n, k, transpose_a, transpose_b)
        grad_c = random_array(rng, (m, n))
        plain.launched.clear()
        grad_a, grad_b = gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision, variant=variant,
                                              executor=plain)
        assert {kernel.startswith(f"gemm_{variant}") for family, kernel in plain.launched if family != "cast"} == {True}
        expected_a, expected_b = ref.matmul_backward(grad_c, a, b, transpose_a=transpose_a, transpose_b=transpose_b)
        assert grad_a.shape == a.shape and grad_b.shape == b.shape
        assert_close(grad_a, expected_a, precision=precision)
        assert_close(grad_b, expected_b, precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_linear_backward_masks_grad_y_inside_the_products(plain, rng, variant, precision, config):
    # Few output features: the bias gradient's finishing pass runs one 256-thread block per feature.
    batch, features_in, features_out = 36, 20, 12
    x = random_array(rng, (batch, features_in))
    weight = random_array(rng, (features_out, features_in))
    y = ref.relu(random_array(rng, (batch, features_out))).astype(np.float32)  # about half masked
    grad_y = random_array(rng, (batch, features_out))
    plain.launched.clear()
    grad_x, grad_w, grad_b = gemm.linear_backward(grad_y, x, weight, y, "relu", precision, variant=variant,
                                                  executor=plain)
    gemm_kernels = {kernel for family, kernel in plain.launched if family.startswith("gemm")}
    if variant == "naive":
        assert gemm_kernels == {"gemm_naive_f32"}
    elif variant == "simt":
        assert all(k.endswith("_mask_f32") for k in gemm_kernels), gemm_kernels
        assert {k.split("_")[-3] for k in gemm_kernels} == {"nn", "tn"}
    else:  # one producer pass writes the masked grad_y that both products read (12 features: rows of 24
        # bytes at 16 bits, which a second pass pads to 32 for the 16-byte loads; no mask there)
        assert {k.split("_")[-1] for k in gemm_kernels} == {"nn", "tn"}
        storage = "f32" if precision == "tf32" else precision
        casts = {k for family, k in plain.launched if family == "cast"}
        assert f"cast_f32_{storage}" in casts and casts <= {f"cast_f32_{storage}", f"cast_{storage}_{storage}"}
    expected = ref.linear_backward(grad_y, x, weight, y=y, activation="relu")
    for got, want in zip((grad_x, grad_w, grad_b), expected, strict=True):
        assert_close(got, want, precision=precision)
    # Without the activation nothing is masked: the results must differ from the masked ones.
    unmasked = gemm.linear_backward(grad_y, x, weight, None, None, precision, variant=variant, config=config,
                                    executor=plain)
    expected = ref.linear_backward(grad_y, x, weight)
    for got, want in zip(unmasked, expected, strict=True):
        assert_close(got, want, precision=precision)
    assert not np.allclose(unmasked[0], grad_x)


def test_repeated_runs_give_identical_bits(plain, rng):
    a, b = operands(rng, 132, 20, 52, False, True)
    for variant, precision in (("simt", "ieee"), ("tc", "tf32"), ("tc", "bf16")):
        first = gemm.gemm(a, b, transpose_b=True, variant=variant, precision=precision, executor=plain)
        second = gemm.gemm(a, b, transpose_b=True, variant=variant, precision=precision, executor=plain)
        assert first.tobytes() == second.tobytes()


# ---------------------------------------------------------------- sanitizers (the rest: test_kernels_harness)


@pytest.mark.parametrize("mode", ("asan", "tsan"))
def test_sanitized_fused_backward(rng, mode):
    """linear_backward end to end: both masked products and the masked bias gradient."""
    executor = HarnessExecutor(mode, multiprocessor_count=1)
    x, weight = random_array(rng, (12, 8)), random_array(rng, (4, 8))
    y = ref.relu(random_array(rng, (12, 4))).astype(np.float32)
    grad_y = random_array(rng, (12, 4))
    got = gemm.linear_backward(grad_y, x, weight, y, "relu", "ieee", variant="simt", executor=executor)
    for g, want in zip(got, ref.linear_backward(grad_y, x, weight, y=y, activation="relu"), strict=True):
        assert_close(g, want)


# ---------------------------------------------------------------- the launcher's choices (no kernels run)


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
    for family in ("gemm", "gemm_tc"):
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
