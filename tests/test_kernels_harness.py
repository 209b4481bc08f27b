"""Every kernel of kernels/*.cu, through its launcher, on the CPU harness against dlgpu.reference.

Each case runs the launchers of one family with ``executor=HarnessExecutor(mode)``
(outputs poisoned: ``xp.empty`` fills with NaN, ``out=`` arrays are NaN-filled),
plain and under AddressSanitizer and ThreadSanitizer, on small odd shapes, and
declares the kernels it must have launched.  The last test fails when a kernel in
kernels/ is declared by no case: a new kernel needs harness coverage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.cuda import bias_grad as cuda_bias_grad
from dlgpu.cuda import compiler
from dlgpu.cuda import elementwise as cuda_elementwise
from dlgpu.cuda import gemm as cuda_gemm
from dlgpu.cuda import gemm_wgmma as cuda_gemm_wgmma
from dlgpu.cuda import pool as cuda_pool
from dlgpu.cuda import sgd as cuda_sgd
from dlgpu.cuda import softmax as cuda_softmax
from dlgpu.testing import assert_close, bf16_bits, harness, random_array, stored_values
from dlgpu.testing.harness import HarnessExecutor

# The package attribute dlgpu.cuda.conv2d is the backend function; this is the launcher module.
cuda_conv2d = importlib.import_module("dlgpu.cuda.conv2d")


# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


def nan_like(array):
    return np.full(array.shape, np.nan, np.float32)


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    kernels: tuple[str, ...]
    check: Callable[[HarnessExecutor, np.random.Generator], None]


# ---------------------------------------------------------------- elementwise

# 1: a single element; 37: head and tail only; 20011 with one SM: the grid-stride loop
# takes the four-float4 batch several times.
ELEMENTWISE_SIZES = (1, 37, 20011)


def check_activations(executor, rng):
    for n in ELEMENTWISE_SIZES:
        base = random_array(rng, n + 1, scale=3.0)
        for x in (base[:n], base[1:]):  # aligned with out, and one element off (all scalar)
            for op, launcher in (("relu", cuda_elementwise.relu_forward), ("tanh", cuda_elementwise.tanh_forward),
                                 ("sigmoid", cuda_elementwise.sigmoid_forward)):
                y = launcher(x, nan_like(x), executor=executor)
                assert_close(y, getattr(ref, op)(x), elementwise=True)
        x = random_array(rng, n)
        expected = ref.tanh(x)
        cuda_elementwise.tanh_forward(x, x, executor=executor)  # in place
        assert_close(x, expected, elementwise=True)


def check_activation_backward(executor, rng):
    for n in ELEMENTWISE_SIZES:
        grad_y = random_array(rng, n)
        for op, launcher in (("relu", cuda_elementwise.relu_backward), ("tanh", cuda_elementwise.tanh_backward),
                             ("sigmoid", cuda_elementwise.sigmoid_backward)):
            y = getattr(ref, op)(random_array(rng, n)).astype(np.float32)
            grad_x = launcher(grad_y, y, nan_like(y), executor=executor)
            assert_close(grad_x, getattr(ref, f"{op}_backward")(grad_y, y), elementwise=True)
        y = ref.sigmoid(random_array(rng, n)).astype(np.float32)
        expected = ref.sigmoid_backward(grad_y, y)
        cuda_elementwise.sigmoid_backward(grad_y, y, y, executor=executor)  # out is y
        assert_close(y, expected, elementwise=True)


# ---------------------------------------------------------------- bias_grad


def check_bias_grad(executor, rng):
    # 70 rows: three row chunks in the first pass; (N, C, H, W) with a prime spatial size.
    for shape in ((1, 1), (70, 3), (5, 7, 3, 5), (33, 2, 1, 1)):
        grad_y = random_array(rng, shape)
        axes = (0,) + tuple(range(2, len(shape)))
        grad_b = cuda_bias_grad.bias_grad(grad_y, out=np.full(shape[1], np.nan, np.float32), executor=executor)
        assert_close(grad_b, grad_y.astype(np.float64).sum(axis=axes))
        y = ref.relu(random_array(rng, shape)).astype(np.float32)
        grad_b = cuda_bias_grad.bias_grad(grad_y, y, executor=executor)
        assert_close(grad_b, np.where(y > 0, grad_y, 0).astype(np.float64).sum(axis=axes))


# ---------------------------------------------------------------- sgd


def check_sgd(executor, rng):
    for n in (1, 37, 5003):
        for momentum, weight_decay in ((0.9, 0.01), (0.0, 0.1)):
            param, grad = random_array(rng, n), random_array(rng, n)
            velocity = random_array(rng, n) if momentum else None
            expected_param = param.copy()
            expected_velocity = None if velocity is None else velocity.copy()
            ref.sgd_step(expected_param, grad, expected_velocity, lr=0.1, momentum=momentum, weight_decay=weight_decay)
            cuda_sgd.sgd_step(param, grad, velocity, 0.1, momentum, weight_decay, executor=executor)
            assert_close(param, expected_param, elementwise=True)
            if velocity is not None:
                assert_close(velocity, expected_velocity, elementwise=True)


# ---------------------------------------------------------------- softmax

# One class count per forward variant: warp1 .. warp32, then a block per row.
SOFTMAX_CLASSES = (5, 40, 100, 200, 300, 700, 1031)


def check_softmax_forward(label_dtype):
    def check(executor, rng):
        for classes in SOFTMAX_CLASSES:
            rows = 5
            logits = random_array(rng, (rows, classes), scale=3.0)
            labels = rng.integers(0, classes, rows).astype(label_dtype)
            loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
            expected_loss, expected_probs = ref.softmax_cross_entropy(logits, labels)
            assert loss.shape == () and loss.dtype == np.float32
            assert_close(probs, expected_probs)
            assert_close(loss, expected_loss)
        if executor.mode != "plain":
            return  # the sanitizers have seen every kernel; stability is a numerics question
        logits = random_array(rng, (3, 33), scale=1e4)
        labels = np.array([0, 32, 7], label_dtype)
        loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
        expected_loss, expected_probs = ref.softmax_cross_entropy(logits, labels)
        assert_close(probs, expected_probs)
        assert_close(loss, expected_loss)

    return check


def check_softmax_backward(executor, rng):
    shapes = ((1, 1), (9, 7), (13, 8), (3, 301)) if executor.mode == "plain" else ((9, 7), (13, 8))
    for label_dtype in (np.int32, np.int64):
        for rows, classes in shapes:  # 8 classes: the float4 path
            probs = ref.softmax_cross_entropy(random_array(rng, (rows, classes)), np.zeros(rows, np.int64))[1]
            probs = probs.astype(np.float32)
            labels = rng.integers(0, classes, rows).astype(label_dtype)
            grad = cuda_softmax.softmax_cross_entropy_backward(probs, labels, executor=executor)
            assert_close(grad, ref.softmax_cross_entropy_backward(probs, labels), elementwise=True)


# ---------------------------------------------------------------- pool

POOL_CASES = (  # (N, C, H, W), kernel, stride, padding
    ((2, 3, 7, 5), (3, 2), (2, 1), (1, 1)),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((3, 2, 13, 11), (3, 3), (3, 2), (1, 0)),
    ((1, 5, 8, 8), (2, 2), (2, 2), (0, 0)),
)


def check_pool(executor, rng):
    for shape, kernel, stride, padding in POOL_CASES:
        x = random_array(rng, shape)
        y, argmax = cuda_pool.max_pool2d(x, kernel, stride, padding, executor=executor)
        expected_y, expected_argmax = ref.max_pool2d(x, kernel, stride=stride, padding=padding)
        np.testing.assert_array_equal(argmax, expected_argmax)
        assert_close(y, expected_y, elementwise=True)
        grad_y = random_array(rng, y.shape)
        expected = ref.max_pool2d_backward(grad_y, expected_argmax, shape)
        for window in (None, (kernel, stride, padding)):  # plane walk, and gather by window
            grad_x = cuda_pool.max_pool2d_backward(grad_y, argmax, shape, window, executor=executor)
            assert_close(grad_x, expected)


# ---------------------------------------------------------------- gemm

# Tiled kernels need every leading dimension % 4 == 0 (else the launcher takes naive):
# (M, N, K) not multiples of any tile, K not of the k-tile 8, and one tile-crossing shape.
GEMM_SHAPES = ((36, 20, 12), (132, 68, 4), (1, 4, 28))


def gemm_expected(a, b, transpose_a, transpose_b, bias=None, relu=False, mask_a=None):
    a = a if mask_a is None else np.where(mask_a > 0, a, 0)
    c = ref.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if bias is not None:
        c = c + bias
    return np.maximum(c, 0) if relu else c


def check_gemm_simt(config):
    def check(executor, rng):
        shapes = GEMM_SHAPES if executor.mode == "plain" else GEMM_SHAPES[:1]
        for m, n, k in shapes:
            for layout in cuda_gemm.LAYOUTS:
                ta, tb = layout[0] == "t", layout[1] == "t"
                a = random_array(rng, (k, m) if ta else (m, k))
                b = random_array(rng, (n, k) if tb else (k, n))
                bias = random_array(rng, n) if layout in ("nn", "tt") else None
                relu = layout in ("nt", "tt")
                c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=relu,
                                   out=np.full((m, n), np.nan, np.float32), variant="simt", config=config,
                                   executor=executor)
                assert_close(c, gemm_expected(a, b, ta, tb, bias, relu))
                if layout in cuda_gemm.MASK_LAYOUTS:
                    mask = random_array(rng, a.shape)
                    c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, mask_a=mask, variant="simt",
                                       config=config, executor=executor)
                    assert_close(c, gemm_expected(a, b, ta, tb, mask_a=mask))

    return check


def check_gemm_tc(config):
    def check(executor, rng):
        # Each precision is its own build; the sanitizers see tf32 (tests/test_gemm_harness.py: the rest).
        precisions = ("tf32", "bf16", "fp16") if executor.mode == "plain" else ("tf32",)
        m, n, k = GEMM_SHAPES[0]
        for precision in precisions:
            for layout in cuda_gemm.LAYOUTS:
                ta, tb = layout[0] == "t", layout[1] == "t"
                a = random_array(rng, (k, m) if ta else (m, k))
                b = random_array(rng, (n, k) if tb else (k, n))
                bias = random_array(rng, n)
                c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=True, precision=precision,
                                   variant="tc", config=config, executor=executor)
                assert_close(c, gemm_expected(a, b, ta, tb, bias, True), precision=precision)
                if layout in cuda_gemm.MASK_LAYOUTS:
                    mask = random_array(rng, a.shape)
                    c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, mask_a=mask, precision=precision,
                                       variant="tc", config=config, executor=executor)
                    assert_close(c, gemm_expected(a, b, ta, tb, mask_a=mask), precision=precision)

    return check


def check_gemm_naive(executor, rng):
    shapes = ((1, 1, 1), (5, 7, 3), (17, 3, 33)) if executor.mode == "plain" else ((17, 3, 33),)
    for m, n, k in shapes:  # any shape: nothing needs alignment
        for layout in cuda_gemm.LAYOUTS:
            ta, tb = layout[0] == "t", layout[1] == "t"
            a = random_array(rng, (k, m) if ta else (m, k))
            b = random_array(rng, (n, k) if tb else (k, n))
            bias, mask = random_array(rng, n), random_array(rng, a.shape)
            c = cuda_gemm.gemm(a, b, transpose_a=ta, transpose_b=tb, bias=bias, relu=True, mask_a=mask,
                               variant="naive", executor=executor)
            assert_close(c, gemm_expected(a, b, ta, tb, bias, True, mask))


# ---------------------------------------------------------------- conv2d

# (x shape, w shape, stride, padding, dilation): stride 2 with padding and dilation 2 on a
# non-square prime input; a 1x1 layer for the simt fast path.
CONV_CASES = (
    ((2, 3, 7, 5), (5, 3, 3, 3), (2, 1), (1, 2), (2, 1)),
    ((1, 4, 3, 5), (6, 4, 1, 1), (1, 1), (0, 0), (1, 1)),
)


def conv_inputs(rng, x_shape, w_shape, geometry):
    x, weight, bias = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, w_shape[0])
    y = ref.conv2d(x, weight, bias, activation="relu", **geometry)
    return x, weight, bias, y.astype(np.float32), random_array(rng, y.shape)


def conv_geometry(stride, padding, dilation):
    return dict(stride=stride, padding=padding, dilation=dilation)


def check_conv2d_naive(executor, rng):
    for x_shape, w_shape, *pairs in CONV_CASES[:1]:
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        out = cuda_conv2d.forward(x, weight, bias, relu=True, variant="naive", executor=executor, **geometry)
        assert_close(out, y)
        expected = ref.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        assert_close(cuda_conv2d.dgrad(grad_y, weight, x.shape, mask=y, variant="naive", executor=executor,
                                       **geometry), expected[0])
        assert_close(cuda_conv2d.wgrad(grad_y, x, weight.shape, mask=y, variant="naive", executor=executor,
                                       **geometry), expected[1])


def check_conv2d_simt(executor, rng):
    # Under the sanitizers (slow thread start-up) each kernel runs once: the general kernels on the
    # strided case, the 1x1 kernels on the 1x1 case, dgrad and wgrad's split and finish on the first.
    for index, (x_shape, w_shape, *pairs) in enumerate(CONV_CASES):
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        for config in cuda_conv2d.SIMT_CONFIGS:
            out = cuda_conv2d.forward(x, weight, bias, relu=True, variant="simt", config=config.name,
                                      executor=executor, **geometry)
            assert_close(out, y)
        if index > 0 and executor.mode != "plain":
            continue
        expected = ref.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        for config in cuda_conv2d.SIMT_CONFIGS:
            assert_close(cuda_conv2d.dgrad(grad_y, weight, x.shape, mask=y, variant="simt", config=config.name,
                                           executor=executor, **geometry), expected[0])
        for splits in (1, 2):
            assert_close(cuda_conv2d.wgrad(grad_y, x, weight.shape, mask=y, variant="simt", splits=splits,
                                           executor=executor, **geometry), expected[1])


def check_conv2d_tc(executor, rng):
    # Each precision is its own build: all three plain, bf16 under the sanitizers.
    precisions = tuple(cuda_conv2d.TC_PRECISION_DEFINE) if executor.mode == "plain" else ("bf16",)
    for index, (x_shape, w_shape, *pairs) in enumerate(CONV_CASES):
        geometry = conv_geometry(*pairs)
        x, weight, bias, y, grad_y = conv_inputs(rng, x_shape, w_shape, geometry)
        expected = ref.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
        for precision in precisions:
            for config in cuda_conv2d.TC_CONFIGS:
                kw = dict(precision=precision, variant="tc", config=config.name, executor=executor, **geometry)
                assert_close(cuda_conv2d.forward(x, weight, bias, relu=True, **kw), y, precision=precision)
                if index == 0:
                    assert_close(cuda_conv2d.dgrad(grad_y, weight, x.shape, mask=y, **kw), expected[0],
                                 precision=precision)
                    assert_close(cuda_conv2d.wgrad(grad_y, x, weight.shape, mask=y, splits=2, **kw), expected[1],
                                 precision=precision)


def check_gemm_wgmma(executor, rng):
    # Each kernel once (the sanitizers start 384 threads slowly): partial tiles, rows of 65 halves (padded for
    # TMA).  tests/test_gemm_wgmma.py has more shapes, the epilogue and planted bugs.
    m, n, k = 67, 33, 65
    for name in cuda_gemm_wgmma.kernel_names():
        config, layout, precision = name.split("_")[2:]
        ta, tb = layout[0] == "t", layout[1] == "t"
        store = {"bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16), "tf32": lambda v: v}[precision]
        a = store(random_array(rng, (k, m) if ta else (m, k)))
        b = store(random_array(rng, (n, k) if tb else (k, n)))
        c = cuda_gemm_wgmma.gemm(a, b, transpose_a=ta, transpose_b=tb, precision=precision, config=config,
                                 executor=executor)
        expected = ref.matmul(stored_values(a, precision), stored_values(b, precision), transpose_a=ta,
                              transpose_b=tb)
        assert_close(c, expected, precision=precision)


CASES = (
    Case("activations", "elementwise", ("relu_forward_f32", "tanh_forward_f32", "sigmoid_forward_f32"),
         check_activations),
    Case("activation_backward", "elementwise", ("relu_backward_f32", "tanh_backward_f32", "sigmoid_backward_f32"),
         check_activation_backward),
    Case("bias_grad", "bias_grad", ("bias_grad_partial_f32", "bias_grad_relu_partial_f32", "bias_grad_finish_f32"),
         check_bias_grad),
    Case("sgd", "sgd", ("sgd_momentum_f32", "sgd_plain_f32"), check_sgd),
    *(
        Case(f"softmax_forward_{suffix}", "softmax",
             (*(f"softmax_xent_forward_warp{v}_{suffix}" for v in cuda_softmax.WARP_VALUES),
              f"softmax_xent_forward_block_{suffix}", "softmax_xent_mean_f32"),
             check_softmax_forward(dtype))
        for suffix, dtype in (("i32", np.int32), ("i64", np.int64))
    ),
    Case("softmax_backward", "softmax", ("softmax_xent_backward_i32", "softmax_xent_backward_i64"),
         check_softmax_backward),
    Case("gemm_naive", "gemm", ("gemm_naive_f32",), check_gemm_naive),
    *(
        Case(f"gemm_simt_{config.name}", "gemm",
             (*(f"gemm_simt_{config.name}_{layout}_f32" for layout in cuda_gemm.LAYOUTS),
              *(f"gemm_simt_{config.name}_{layout}_mask_f32" for layout in cuda_gemm.MASK_LAYOUTS)),
             check_gemm_simt(config.name))
        for config in cuda_gemm.SIMT_CONFIGS
    ),
    *(
        Case(f"gemm_tc_{config.name}", "gemm_tc",
             tuple(k for k in cuda_gemm.kernel_names("tc") if k.startswith(f"gemm_tc_{config.name}_")),
             check_gemm_tc(config.name))
        for config in cuda_gemm.TC_CONFIGS
    ),
    Case("gemm_wgmma", "gemm_wgmma", tuple(cuda_gemm_wgmma.kernel_names()), check_gemm_wgmma),
    Case("pool", "pool", ("max_pool2d_forward_f32", "max_pool2d_backward_f32", "max_pool2d_backward_planes_f32"),
         check_pool),
    Case("conv2d_naive", "conv2d", ("conv2d_fwd_naive_f32", "conv2d_dgrad_naive_f32", "conv2d_wgrad_naive_f32"),
         check_conv2d_naive),
    Case("conv2d_simt", "conv2d",
         (*(f"conv2d_{p}_simt_{c.name}{s}_f32" for c in cuda_conv2d.SIMT_CONFIGS
            for p, s in (("fwd", ""), ("fwd", "_1x1"), ("dgrad", ""))),
          "conv2d_wgrad_simt_f32", "conv2d_wgrad_finish_f32"),
         check_conv2d_simt),
    Case("conv2d_tc", "conv2d_tc",
         tuple(f"conv2d_{p}_tc_{c.name}{s}_f32" for c in cuda_conv2d.TC_CONFIGS
               for p, s in (("fwd", ""), ("fwd", "_1x1"), ("dgrad", ""), ("wgrad", ""))),
         check_conv2d_tc),
)


@pytest.mark.parametrize("mode", harness.MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_kernels_match_the_reference(case, mode, rng):
    executor = HarnessExecutor(mode, multiprocessor_count=1)
    case.check(executor, rng)
    missing = {(case.family, k) for k in case.kernels} - executor.launched
    assert not missing, f"case {case.name} declares kernels it never launched: {sorted(missing)}"


@pytest.mark.gpu
def test_harness_agrees_with_the_gpu_through_the_launchers():
    """The same launcher calls on the GPU and on the harness (same grids): outputs must agree."""
    def inputs(xp, *shapes):
        rng = np.random.default_rng(7)
        return [xp.asarray(random_array(rng, shape)) for shape in shapes]

    def calls(executor):
        xp = executor.xp
        x, g = inputs(xp, (1031,), (1031,))
        logits, grad_y = inputs(xp, (37, 300), (70, 3))
        pool_x, = inputs(xp, (2, 3, 13, 11))
        labels = xp.asarray(np.arange(37, dtype=np.int64) % 300)
        y, argmax = cuda_pool.max_pool2d(pool_x, (3, 3), (2, 2), (1, 1), executor=executor)
        return (
            cuda_elementwise.tanh_forward(x, executor=executor),
            cuda_elementwise.sigmoid_backward(g, x, executor=executor),
            *cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor),
            cuda_bias_grad.bias_grad(grad_y, executor=executor),
            y,
            argmax,
            cuda_pool.max_pool2d_backward(y, argmax, pool_x.shape, executor=executor),
        )

    errors = harness.cross_check(calls)
    assert len(errors) == 8


def test_every_kernel_has_harness_coverage():
    """A kernel in kernels/*.cu that no case above declares fails here."""
    declared = {(case.family, kernel) for case in CASES for kernel in case.kernels}
    present = set()
    for family in compiler.families():
        present |= {(family, k) for k in harness.kernel_names(compiler.source_path(family).read_text())}
    assert not present - declared, f"kernels without harness coverage: {sorted(present - declared)}"
    assert not declared - present, f"declared kernels that kernels/ does not have: {sorted(declared - present)}"
