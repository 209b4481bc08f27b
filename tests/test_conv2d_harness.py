"""The convolution kernels on the CPU harness against dlgpu.reference, and the launcher's choices.

Every registered variant (dlgpu.cuda.conv2d.VARIANTS) x pass x precision x tile configuration
runs through ``HarnessExecutor("plain")`` on small odd configurations (batch 1, C = 1 and 3,
K = 1, prime and non-square H and W, stride 2 and 3, dilation 2, padding, 1x1 and 7x7),
outputs NaN-poisoned, and each call checks which kernel ran, so a silent fallback cannot pass
for a tiled kernel.  The sanitizer runs (ASan, TSan) are the "conv2d" cases of
tests/test_kernels_harness.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.cpu.gemm import round_operand
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.testing import assert_close, random_array, rel_error
from dlgpu.testing.harness import HarnessExecutor

# The package attribute dlgpu.cuda.conv2d is the backend function; this is the launcher module.
conv = importlib.import_module("dlgpu.cuda.conv2d")


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


def cases(pass_: str):
    """Every combination on every configuration, except that the 16-bit precisions, whose kernels
    are the tf32 ones in another build, see a third of the configurations (CI time)."""
    return [pytest.param(v, p, c, config, id=f"{v}-{p}-{c or 'any'}-{config.id}")
            for v, p, c in combos(pass_) for index, config in enumerate(CONFIGS)
            if p not in ("bf16", "fp16") or index % 3 == (0 if p == "bf16" else 1)]


# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def plain():
    return HarnessExecutor("plain", multiprocessor_count=1)


def inputs(rng, config: Config, *, relu: bool):
    x = random_array(rng, config.x)
    weight = random_array(rng, config.w)
    bias = random_array(rng, config.w[0])
    y = ref.conv2d(x, weight, bias, activation="relu" if relu else None, **config.geometry())
    grad_y = random_array(rng, y.shape)
    return x, weight, bias, y.astype(np.float32), grad_y


def ran(executor, family: str, kernel: str) -> None:
    assert (family, kernel) in executor.launched, sorted(executor.launched)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), cases("forward"))
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
        expected = ref.conv2d(x, weight, bias, activation=activation, **config.geometry())
        if y.size >= 64:  # the tolerance table's bounds are for outputs of some size, not two numbers
            assert_close(y, expected, dtype=np.float32, precision=precision)
        # Tight: against the reference fed the operands as the tensor cores read them, so only the
        # fp32 accumulation differs (and tf32's ties, away from zero on the device, to even here).
        rounded = ref.conv2d(round_operand(x, precision), round_operand(weight, precision), bias,
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
        assert_close(y, ref.conv2d(x, weight, bias), dtype=np.float32, precision=precision)


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), cases("dgrad"))
def test_dgrad_matches_the_reference(variant, precision, tile, config, plain, rng):
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    for mask in (y, None):
        activation = "relu" if mask is not None else None
        expected = ref.conv2d_backward(grad_y, x, weight, y=mask, activation=activation, **config.geometry())[0]
        out = np.full(x.shape, np.nan, np.float32)
        grad_x = conv.dgrad(grad_y, weight, x.shape, mask=mask, precision=precision, out=out, variant=variant,
                            config=tile, executor=plain, **config.geometry())
        assert grad_x is out
        kernel = f"conv2d_dgrad_{variant}_{tile}_f32" if tile else "conv2d_dgrad_naive_f32"
        ran(plain, conv.VARIANTS[variant].family, kernel)
        if variant == "tc":  # tight, as for the forward: only the accumulation may differ
            rounded = ref.conv2d_backward(round_operand(grad_y, precision), x, round_operand(weight, precision),
                                          y=mask, activation=activation, **config.geometry())[0]
            assert rel_error(grad_x, rounded) <= 1e-4
        assert_close(grad_x, expected, dtype=np.float32, precision=precision)


@pytest.mark.parametrize(("variant", "precision", "tile", "config"), cases("wgrad"))
def test_wgrad_matches_the_reference(variant, precision, tile, config, plain, rng):
    x, weight, bias, y, grad_y = inputs(rng, config, relu=True)
    # simt, tc: the default split count, and a forced three-way split (the fixed-order second pass).
    for mask, splits in ((y, None), (None, 3 if variant != "naive" else None)):
        activation = "relu" if mask is not None else None
        expected = ref.conv2d_backward(grad_y, x, weight, y=mask, activation=activation, **config.geometry())[1]
        out = np.full(weight.shape, np.nan, np.float32)
        grad_w = conv.wgrad(grad_y, x, weight.shape, mask=mask, precision=precision, out=out, variant=variant,
                            config=tile, splits=splits, executor=plain, **config.geometry())
        assert grad_w is out
        kernel = {"naive": "conv2d_wgrad_naive_f32", "simt": "conv2d_wgrad_simt_f32"}.get(variant)
        ran(plain, conv.VARIANTS[variant].family, kernel or f"conv2d_wgrad_tc_{tile}_f32")
        if variant == "tc":
            rounded = ref.conv2d_backward(round_operand(grad_y, precision), round_operand(x, precision), weight,
                                          y=mask, activation=activation, **config.geometry())[1]
            assert rel_error(grad_w, rounded) <= 1e-4
        assert_close(grad_w, expected, dtype=np.float32, precision=precision)


@pytest.mark.parametrize("precision", ("ieee", "tf32", "bf16", "fp16"))
def test_backend_functions_at_every_precision(precision, plain, rng):
    """conv2d / conv2d_backward as dlgpu.cuda calls them: fused ReLU forward, then all three gradients."""
    config = CONFIGS[2]  # stride 3 x 2, dilation 2 x 1, asymmetric padding
    x, weight, bias, _, _ = inputs(rng, config, relu=True)
    y = conv.conv2d(x, weight, bias, config.stride, config.padding, config.dilation, "relu", precision, None,
                    executor=plain)
    expected_y = ref.conv2d(x, weight, bias, activation="relu", **config.geometry())
    assert_close(y, expected_y, dtype=np.float32, precision=precision)
    grad_y = random_array(rng, y.shape)
    grads = conv.conv2d_backward(grad_y, x, weight, y, config.stride, config.padding, config.dilation, "relu",
                                 precision, executor=plain)
    expected = ref.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **config.geometry())
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


# ---------------------------------------------------------------- launcher logic (no kernels run)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 9, 25, 49, 56, 3136, 12544, 65535, 2**20 + 1, 2**31 - 1])
def test_fast_divisor_is_exact(d):
    mul, shift = conv.fast_divisor(d)
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
        conv.fast_divisor(0)


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
