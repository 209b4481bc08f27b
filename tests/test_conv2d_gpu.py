"""The convolution kernels on a GPU against dlgpu.reference (all marked ``gpu``).

Every registered variant x pass x precision (dlgpu.cuda.conv2d.VARIANTS) runs on fixed odd
configurations (batch 1, C = 1 and 3, K = 1, prime H and W, stride 2 and 3 with odd sizes,
dilation 2, padding, 1x1 and 7x7) and on seeded random ones, outputs poisoned with NaN
before each launch; results are checked against the float64 reference at the tolerance of
the precision, and for determinism (two runs, same bits).  The public ops F.conv2d and
F.conv2d_backward run on CuPy arrays, and the harness is cross-checked against the device.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as ref
from dlgpu.testing import assert_close, harness, random_array, to_numpy

conv = importlib.import_module("dlgpu.cuda.conv2d")

pytestmark = pytest.mark.gpu

# (x shape, w shape, stride, padding, dilation)
FIXED = (
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


CONFIGS = FIXED + random_configs(8)
IDS = [f"x{'x'.join(map(str, x))}-w{'x'.join(map(str, w))}-s{s[0]}{s[1]}-p{p[0]}{p[1]}-d{d[0]}{d[1]}"
       for x, w, s, p, d in CONFIGS]
FORWARD = [(v, p, c.name if c else None) for v, variant in conv.VARIANTS.items() if "forward" in variant.passes
           for p in variant.passes["forward"] for c in (conv.CONFIGS[v] or (None,))]
BACKWARD = [(pass_, v, p) for pass_ in ("dgrad", "wgrad") for v, variant in conv.VARIANTS.items()
            if pass_ in variant.passes for p in variant.passes[pass_]]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def geometry(config):
    _, _, stride, padding, dilation = config
    return dict(stride=stride, padding=padding, dilation=dilation)


def host_inputs(config, seed=3):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, *_ = config
    x, weight, bias = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, w_shape[0])
    y = ref.conv2d(x, weight, bias, activation="relu", **geometry(config)).astype(np.float32)
    return x, weight, bias, y, random_array(rng, y.shape)


def nan(cp, shape):
    return cp.full(shape, np.nan, dtype=np.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize(("variant", "precision", "tile"), FORWARD,
                         ids=[f"{v}-{p}-{t or 'any'}" for v, p, t in FORWARD])
def test_forward(cp, variant, precision, tile, config):
    x, weight, bias, _, _ = host_inputs(config)
    dx, dw, db = cp.asarray(x), cp.asarray(weight), cp.asarray(bias)
    expected = ref.conv2d(x, weight, bias, activation="relu", **geometry(config))
    runs = []
    for _ in range(2):
        out = nan(cp, expected.shape)
        conv.forward(dx, dw, db, relu=True, precision=precision, out=out, variant=variant, config=tile,
                     **geometry(config))
        runs.append(to_numpy(out))
    assert_close(runs[0], expected, dtype=np.float32, precision=precision)
    np.testing.assert_array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize(("pass_", "variant", "precision"), BACKWARD, ids=[f"{a}-{v}-{p}" for a, v, p in BACKWARD])
def test_backward_passes(cp, pass_, variant, precision, config):
    x, weight, _, y, grad_y = host_inputs(config)
    expected = ref.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry(config))
    dgy, dy = cp.asarray(grad_y), cp.asarray(y)
    runs = []
    for _ in range(2):
        if pass_ == "dgrad":
            out = nan(cp, x.shape)
            conv.dgrad(dgy, cp.asarray(weight), x.shape, mask=dy, precision=precision, out=out, variant=variant,
                       **geometry(config))
        else:
            out = nan(cp, weight.shape)
            conv.wgrad(dgy, cp.asarray(x), weight.shape, mask=dy, precision=precision, out=out, variant=variant,
                       **geometry(config))
        runs.append(to_numpy(out))
    assert_close(runs[0], expected[0 if pass_ == "dgrad" else 1], dtype=np.float32, precision=precision)
    np.testing.assert_array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))


@pytest.mark.parametrize("precision", ("ieee", "tf32", "bf16", "fp16"))
@pytest.mark.parametrize("config", FIXED, ids=IDS[: len(FIXED)])
def test_public_ops(cp, precision, config):
    """F.conv2d / F.conv2d_backward on CuPy arrays: the backend's default choices at every precision."""
    x, weight, bias, _, _ = host_inputs(config)
    y = F.conv2d(cp.asarray(x), cp.asarray(weight), cp.asarray(bias), activation="relu", precision=precision,
                 **geometry(config))
    expected_y = ref.conv2d(x, weight, bias, activation="relu", **geometry(config))
    assert_close(y, expected_y, dtype=np.float32, precision=precision)
    grad_y = random_array(np.random.default_rng(5), expected_y.shape)
    y_host = to_numpy(y)
    grads = F.conv2d_backward(cp.asarray(grad_y), cp.asarray(x), cp.asarray(weight), y=y, activation="relu",
                              precision=precision, **geometry(config))
    expected = ref.conv2d_backward(grad_y, x, weight, y=y_host, activation="relu", **geometry(config))
    for got, want in zip(grads, expected):
        assert_close(got, want, dtype=np.float32, precision=precision)


@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_device():
    """The same launches (same grids) on the GPU and on the CPU harness give the same numbers."""
    config = ((2, 3, 11, 7), (5, 3, 3, 3), (2, 1), (1, 1), (1, 2))
    x, weight, bias, y, grad_y = host_inputs(config)

    def calls(executor):
        xp = executor.xp
        dx, dw, db, dy, dgy = (xp.asarray(a) for a in (x, weight, bias, y, grad_y))
        return (
            conv.forward(dx, dw, db, relu=True, variant="simt", executor=executor, **geometry(config)),
            conv.forward(dx, dw, db, variant="naive", executor=executor, **geometry(config)),
            conv.dgrad(dgy, dw, x.shape, mask=dy, executor=executor, **geometry(config)),
            conv.wgrad(dgy, dx, weight.shape, mask=dy, splits=2, executor=executor, **geometry(config)),
        )

    errors = harness.cross_check(calls)
    assert len(errors) == 4
