"""Accumulation over a very long K stays within the fp32 tolerance scaled by sqrt(K).

The tolerance table (dlgpu.testing) is set for the products of everyday sizes;
rounding errors of a K-term sum grow like sqrt(K) for random data, so a product
with K far beyond those sizes may use the bound scaled by sqrt(K / 256).  Every
product here must stay inside it: CPU backend (BLAS), the GEMM kernels on the
CPU harness, and the kernels on a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.testing import harness, random_array, rel_error, tolerance

REFERENCE_K = 256


def scaled_bound(k: int, precision: str = "ieee") -> float:
    return tolerance(np.float32, precision) * max(1.0, math.sqrt(k / REFERENCE_K))


def test_cpu_backend_product_with_k_of_two_to_the_eighteen(rng):
    k = 1 << 18
    a, b = random_array(rng, (3, k)), random_array(rng, (k, 5))
    error = rel_error(F.matmul(a, b), R.matmul(a, b))
    assert error <= scaled_bound(k)


def test_cpu_backend_linear_backward_reduces_a_long_batch(rng):
    batch = 1 << 16
    x, weight = random_array(rng, (batch, 4)), random_array(rng, (3, 4))
    grad_y = random_array(rng, (batch, 3))
    grads = F.linear_backward(grad_y, x, weight)
    for out, ref in zip(grads, R.linear_backward(grad_y, x, weight)):
        assert rel_error(out, ref) <= scaled_bound(batch)


@pytest.mark.parametrize(("variant", "precision"), (("naive", "ieee"), ("simt", "ieee"), ("tc", "tf32")))
def test_gemm_kernels_on_the_harness_with_a_long_k(host_compiler, rng, variant, precision):
    from dlgpu.cuda import gemm

    k = 4100  # a multiple of 4 (the tiled path) and of no k tile
    a, b = random_array(rng, (8, k)), random_array(rng, (k, 12))
    executor = harness.HarnessExecutor("plain", multiprocessor_count=1)
    c = gemm.gemm(a, b, precision=precision, variant=variant, executor=executor)
    assert rel_error(c, R.matmul(a, b)) <= scaled_bound(k, precision)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ("ieee", "tf32", "bf16", "fp16"))
def test_gpu_product_with_k_of_two_to_the_twenty(rng, precision):
    import cupy

    k = 1 << 20
    a, b = random_array(rng, (16, k)), random_array(rng, (k, 24))
    c = F.matmul(cupy.asarray(a), cupy.asarray(b), precision=precision)
    assert rel_error(c, R.matmul(a, b)) <= scaled_bound(k, precision)
