"""The tensor-core GEMM fed from its storage type (kernels/gemm_tc.cu, kernels/tc_tile.cuh, kernels/cast.cu).

tests/test_gemm_harness.py runs every variant x configuration x layout x precision from float32
arrays (bf16 and fp16 through the producer pass).  Here: 16-bit operands read in place (no producer
pass) across the edges of the largest tile, with C in 16 bits or fp32; tf32 operands rounded to
nearest exactly once (what a truncating tensor core would get wrong by far more than an fp32 sum);
the fused epilogue into 16-bit C; and the launcher's dtype rules.  All on the CPU harness, outputs
poisoned, each call checking which kernels ran.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.cuda import gemm
from dlgpu.errors import ArgumentError, DtypeError
from dlgpu.testing import assert_close, bf16_bits, random_array, rel_error, stored_values
from dlgpu.testing.harness import HarnessExecutor

LAYOUTS = list(itertools.product((False, True), repeat=2))  # (transpose_a, transpose_b)
LAYOUT_IDS = [gemm.layout_name(ta, tb) for ta, tb in LAYOUTS]

pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def plain():
    return HarnessExecutor("plain", multiprocessor_count=1)


def stored(values, precision: str):
    """float32 values as a 16-bit precision stores them: bf16 bits (uint16) or float16."""
    return bf16_bits(values) if precision == "bf16" else values.astype(np.float16)


def operands16(rng, m, n, k, ta, tb, precision):
    a = stored(random_array(rng, (k, m) if ta else (m, k)), precision)
    b = stored(random_array(rng, (n, k) if tb else (k, n)), precision)
    return a, b


def product(a, b, ta, tb, precision):
    return ref.matmul(stored_values(a, precision), stored_values(b, precision), transpose_a=ta, transpose_b=tb)


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
    exact = ref.matmul(tf32_rounded(a), tf32_rounded(b), transpose_a=transpose_a, transpose_b=transpose_b)
    assert rel_error(c, exact) < 1e-5
    assert rel_error(c, ref.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)) > 1e-5  # it is tf32


@pytest.mark.parametrize("precision", ("bf16", "fp16"))
def test_fused_epilogue_into_16_bit_outputs(plain, rng, precision):
    # N even: paired (and, in nt, 4-wide) stores; N odd: element by element at the row ends.
    for m, n, k in ((37, 130, 64), (64, 67, 24)):
        a, b = operands16(rng, m, n, k, False, True, precision)
        bias = random_array(rng, n)
        expected = ref.relu(product(a, b, False, True, precision) + bias)
        c = gemm.gemm(a, b, transpose_b=True, bias=bias, relu=True, precision=precision, out_dtype=np.float32,
                      executor=plain)
        assert c.dtype == np.float32
        assert_close(c, expected, precision=precision)
        bias16 = stored(bias, precision)  # a bias in the operands' own type
        half = gemm.gemm(a, b, transpose_b=True, bias=bias16, relu=True, precision=precision, executor=plain)
        assert half.dtype == a.dtype
        expected16 = ref.relu(product(a, b, False, True, precision) + stored_values(bias16, precision))
        assert_close(stored_values(half, precision), expected16, dtype=np.float32, precision=precision)
        assert (stored_values(half, precision) >= 0).all()


def test_16_bit_backward_products_keep_the_operands_dtype_and_layout(plain, rng):
    m, n, k = 24, 40, 16
    for transpose_a, transpose_b in LAYOUTS:
        a, b = operands16(rng, m, n, k, transpose_a, transpose_b, "fp16")
        grad_c = stored(random_array(rng, (m, n)), "fp16")
        grad_a, grad_b = gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, "fp16", executor=plain)
        expected = ref.matmul_backward(grad_c.astype(np.float64), a.astype(np.float64), b.astype(np.float64),
                                       transpose_a=transpose_a, transpose_b=transpose_b)
        for got, operand, want in zip((grad_a, grad_b), (a, b), expected, strict=True):
            assert got.dtype == np.float16 and got.shape == operand.shape
            assert_close(got.astype(np.float64), want, dtype=np.float32, precision="fp16")


def test_mixed_operands_stage_only_the_float32_one(plain, rng):
    a = stored(random_array(rng, (40, 32)), "bf16")
    b = random_array(rng, (32, 48))
    plain.launched.clear()
    c = gemm.gemm(a, b, precision="bf16", out_dtype=np.float32, executor=plain)
    assert kernels(plain, "cast") == {"cast_f32_bf16"}
    assert_close(c, ref.matmul(stored_values(a, "bf16"), stored_values(bf16_bits(b), "bf16")), precision="bf16")


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
    with pytest.raises(ArgumentError, match="variant 'tc' only"):
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
