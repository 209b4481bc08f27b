"""The GEMM kernels on a GPU: every variant x layout x precision against dlgpu.reference.

Marked ``gpu``: skipped where CuPy or a device is missing.  Outputs the launchers
allocate start as NaN (a poisoning executor), so an element a kernel forgets to write
fails.  Shapes are larger and odder than the harness can afford, and each call checks
which kernel ran.  Also: the naive kernel as a second oracle at a size NumPy's float64
product would be slow for, run-to-run bit equality, F.linear's single fused launch, the
public API on CuPy arrays, and the harness against the device on the same launches
(this validates the harness's mma fragment layouts).
"""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cuda import gemm
from dlgpu.testing import assert_close, harness, random_array, rel_error

pytestmark = pytest.mark.gpu

LAYOUTS = list(itertools.product((False, True), repeat=2))
LAYOUT_IDS = [gemm.layout_name(ta, tb) for ta, tb in LAYOUTS]
COMBOS = [
    (name, precision, config.name if config else None)
    for name, variant in gemm.VARIANTS.items()
    for precision in variant.precisions
    for config in (gemm.CONFIGS[name] or (None,))
]
COMBO_IDS = [f"{v}-{p}-{c or 'any'}" for v, p, c in COMBOS]
# Multiples of 4 (the tiled kernels' alignment rule), of no tile: partial tiles on every edge.
TILED_SHAPES = ((4, 4, 4), (260, 132, 516), (1028, 516, 1000), (36, 2052, 68))
ODD_SHAPES = ((1, 1, 1), (1, 257, 3), (127, 129, 65), (509, 263, 1021))


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


class RecordingExecutor:
    """The default executor, with NaN-poisoned allocations and a record of the kernels launched."""

    def __init__(self, cupy):
        from dlgpu.cuda.executor import default_executor

        self._inner = default_executor()
        self.launched: list[str] = []
        self.xp = types.SimpleNamespace(empty=lambda shape, dtype=np.float32: cupy.full(shape, np.nan, dtype),
                                        cuda=cupy.cuda)

    def launch(self, launch):
        self.launched.append(launch.kernel)
        self._inner.launch(launch)


@pytest.fixture()
def executor(cp):
    return RecordingExecutor(cp)


def operands(cp, rng, m, n, k, ta, tb):
    a = random_array(rng, (k, m) if ta else (m, k))
    b = random_array(rng, (n, k) if tb else (k, n))
    return a, b, cp.asarray(a), cp.asarray(b)


@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_product_matches_the_reference(cp, executor, rng, variant, precision, config, transpose_a, transpose_b):
    prefix = {"naive": "gemm_naive", "simt": f"gemm_simt_{config}_", "tc": f"gemm_tc_{config}_"}[variant]
    for m, n, k in TILED_SHAPES + (ODD_SHAPES if variant == "naive" else ()):
        a, b, a_d, b_d = operands(cp, rng, m, n, k, transpose_a, transpose_b)
        executor.launched.clear()
        c = gemm.gemm(a_d, b_d, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision,
                      variant=variant, config=config, executor=executor)
        assert len(executor.launched) == 1 and executor.launched[0].startswith(prefix), executor.launched
        assert_close(c, R.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_linear_fused_epilogue_is_one_launch(cp, executor, rng, variant, precision, config):
    for batch, features_in, features_out in ((256, 784, 512), (100, 36, 12)):
        x, weight = random_array(rng, (batch, features_in)), random_array(rng, (features_out, features_in))
        bias = random_array(rng, features_out)
        executor.launched.clear()
        y = gemm.linear(cp.asarray(x), cp.asarray(weight), cp.asarray(bias), "relu", precision, None,
                        variant=variant, config=config, executor=executor)
        assert len(executor.launched) == 1
        assert_close(y, R.linear(x, weight, bias, activation="relu"), precision=precision)


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_backward_passes(cp, executor, rng, variant, precision, config):
    kw = dict(variant=variant, config=config, executor=executor)
    for ta, tb in LAYOUTS:
        a, b, a_d, b_d = operands(cp, rng, 132, 68, 260, ta, tb)
        grad_c = random_array(rng, (132, 68))
        got = gemm.matmul_backward(cp.asarray(grad_c), a_d, b_d, ta, tb, precision, **kw)
        for g, want in zip(got, R.matmul_backward(grad_c, a, b, transpose_a=ta, transpose_b=tb), strict=True):
            assert_close(g, want, precision=precision)
    x, weight = random_array(rng, (256, 784)), random_array(rng, (512, 784))
    y = R.relu(random_array(rng, (256, 512))).astype(np.float32)
    grad_y = random_array(rng, (256, 512))
    executor.launched.clear()
    got = gemm.linear_backward(cp.asarray(grad_y), cp.asarray(x), cp.asarray(weight), cp.asarray(y), "relu",
                               precision, **kw)
    if variant != "naive":
        assert [k for k in executor.launched if k.startswith("gemm")] == [
            f"gemm_{variant}_{config}_nn_mask_f32", f"gemm_{variant}_{config}_tn_mask_f32"]
    for g, want in zip(got, R.linear_backward(grad_y, x, weight, y=y, activation="relu"), strict=True):
        assert_close(g, want, precision=precision)


def test_tiled_kernels_agree_with_the_naive_oracle_at_size(cp, rng):
    a, b = cp.asarray(random_array(rng, (2048, 1500))), cp.asarray(random_array(rng, (2048, 1028)))
    oracle = gemm.gemm(a, b, transpose_a=True, variant="naive")
    assert rel_error(gemm.gemm(a, b, transpose_a=True, variant="simt"), oracle.get()) <= 5e-5
    for precision in ("tf32", "bf16", "fp16"):
        c = gemm.gemm(a, b, transpose_a=True, variant="tc", precision=precision)
        assert rel_error(c, oracle.get()) <= {"tf32": 2e-3, "fp16": 2e-3, "bf16": 1e-2}[precision]


@pytest.mark.parametrize(("variant", "precision", "config"), COMBOS, ids=COMBO_IDS)
def test_two_runs_give_the_same_bits(cp, rng, variant, precision, config):
    a, b = cp.asarray(random_array(rng, (1028, 516))), cp.asarray(random_array(rng, (1000, 516)))
    first = gemm.gemm(a, b, transpose_b=True, precision=precision, variant=variant, config=config).get()
    second = gemm.gemm(a, b, transpose_b=True, precision=precision, variant=variant, config=config).get()
    assert first.tobytes() == second.tobytes()


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
