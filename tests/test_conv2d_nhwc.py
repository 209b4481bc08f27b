"""The NHWC (channels_last) tensor-core convolutions (kernels/conv2d_tc.cu, dlgpu/cuda/conv2d_nhwc.py).

The three passes on the CPU harness against dlgpu.reference (NCHW, float64; arrays transposed here),
outputs poisoned: 16-bit operands read in place, fp32 operands at tf32 and through the producer pass,
channel counts that need zero padding (a first layer's 3), several channel blocks per tap, tiles
crossing every edge, and the launcher's rules.  tests/test_kernels_harness.py runs every NHWC kernel
of every build plain and under ASan and TSan.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.testing import assert_close, bf16_bits, random_array, stored_values
from dlgpu.testing.harness import HarnessExecutor

nhwc = importlib.import_module("dlgpu.cuda.conv2d_nhwc")

pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def plain():
    return HarnessExecutor("plain", multiprocessor_count=1)


def to_nhwc(array):
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def to_nchw(array):
    return array.transpose(0, 3, 1, 2)


def stored(values, precision: str):
    return {"bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16), "tf32": lambda v: v}[precision](values)


def inputs(rng, x_shape, w_shape, precision, geometry):
    """x, w (NCHW / OIHW, float64 of the stored values), their NHWC storage, bias, y, grad_y."""
    x16 = stored(random_array(rng, x_shape), precision)
    w16 = stored(random_array(rng, w_shape), precision)
    x, w = stored_values(x16, precision), stored_values(w16, precision)
    bias = random_array(rng, w_shape[0])
    y = ref.conv2d(x, w, bias, activation="relu", **geometry)
    grad_y = stored(random_array(rng, y.shape), precision)
    return x, w, to_nhwc(x16), to_nhwc(w16), bias, y, grad_y


def geo(stride=1, padding=0, dilation=1):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return dict(stride=pair(stride), padding=pair(padding), dilation=pair(dilation))


# (x NCHW, w OIHW, geometry): C = 40 (two 32-channel blocks per tap at 16 bits, three of 16 floats), 243
# pixels (two 128-row tiles) and K = 136 (two 128-column tiles) at a 3x3 / pad 1; a strided, dilated,
# rectangular case with batch 1; a 1x1.
CASES = (
    ((3, 40, 9, 9), (136, 40, 3, 3), geo(1, 1)),
    ((1, 16, 11, 7), (24, 16, 3, 2), geo((2, 1), (1, 0), (1, 2))),
    ((2, 32, 5, 6), (8, 32, 1, 1), geo()),
)


@pytest.mark.parametrize("precision", ("tf32", "bf16", "fp16"))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_matches_the_reference(plain, rng, precision, case):
    x_shape, w_shape, geometry = CASES[case]
    x, w, x_n, w_n, bias, y, _ = inputs(rng, x_shape, w_shape, precision, geometry)
    plain.launched.clear()
    out = nhwc.forward(x_n, w_n, bias, relu=True, precision=precision, executor=plain, **geometry)
    assert {family for family, _ in plain.launched} == {"conv2d_tc"}  # channels aligned: no producer pass
    assert out.dtype == x_n.dtype and out.shape == to_nhwc(y).shape
    assert_close(stored_values(to_nchw(out), precision), y, dtype=np.float32, precision=precision)


@pytest.mark.parametrize("precision", ("tf32", "bf16"))
def test_backward_passes_match_the_reference(plain, rng, precision):
    for x_shape, w_shape, geometry in CASES[:2]:
        x, w, x_n, w_n, _, y, grad_y = inputs(rng, x_shape, w_shape, precision, geometry)
        y16 = stored(y.astype(np.float32), precision)
        expected = ref.conv2d_backward(stored_values(grad_y, precision), x, w, y=stored_values(y16, precision),
                                       activation="relu", **geometry)
        kw = dict(mask=to_nhwc(y16), precision=precision, executor=plain, **geometry)
        grad_x = nhwc.dgrad(to_nhwc(grad_y), w_n, x_n.shape, **kw)
        assert grad_x.dtype == x_n.dtype
        assert_close(stored_values(to_nchw(grad_x), precision), expected[0], dtype=np.float32, precision=precision)
        grad_w = nhwc.wgrad(to_nhwc(grad_y), x_n, w_n.shape, **kw)
        assert grad_w.dtype == np.float32  # fp32 master weights' gradient
        assert_close(to_nchw(grad_w), expected[1], precision=precision)


def test_a_first_layer_pads_its_three_channels(plain, rng):
    """C = 3 is not a multiple of 16 bytes: the producer pass pads x and w with zero channels (and casts the
    fp32 operands to bf16 on the way); every pass still matches, grad_x and grad_w unpadded."""
    geometry = geo(2, 2)
    x = random_array(rng, (2, 3, 9, 7))
    w = random_array(rng, (8, 3, 5, 5))
    y = ref.conv2d(x, w, activation="relu", **geometry)
    grad_y = random_array(rng, y.shape)
    expected = ref.conv2d_backward(grad_y, x, w, y=y.astype(np.float32), activation="relu", **geometry)
    kw = dict(precision="bf16", executor=plain, **geometry)
    plain.launched.clear()
    out = nhwc.forward(to_nhwc(x), to_nhwc(w), relu=True, **kw)
    assert ("cast", "cast_f32_bf16") in plain.launched and out.dtype == np.float32
    assert_close(to_nchw(out), y, precision="bf16")
    mask = to_nhwc(y.astype(np.float32))
    grad_x = nhwc.dgrad(to_nhwc(grad_y), to_nhwc(w), (2, 9, 7, 3), mask=mask, **kw)
    assert grad_x.shape == (2, 9, 7, 3)
    assert_close(to_nchw(grad_x), expected[0], precision="bf16")
    grad_w = nhwc.wgrad(to_nhwc(grad_y), to_nhwc(x), (8, 5, 5, 3), mask=mask, **kw)
    assert grad_w.shape == (8, 5, 5, 3)
    assert_close(to_nchw(grad_w), expected[1], precision="bf16")


def test_wgrad_bits_do_not_depend_on_the_device(rng):
    """The split count comes from the shape: executors with different SM counts give the same bits."""
    x_shape, w_shape, geometry = CASES[1]
    _, _, x_n, w_n, _, y, grad_y = inputs(rng, x_shape, w_shape, "fp16", geometry)
    results = [nhwc.wgrad(to_nhwc(grad_y), x_n, w_n.shape, precision="fp16", **geometry,
                          executor=HarnessExecutor("plain", multiprocessor_count=sms)) for sms in (1, 132)]
    assert results[0].tobytes() == results[1].tobytes()


def test_16_bit_output_and_bias_in_the_operands_type(plain, rng):
    x_shape, w_shape, geometry = CASES[2]
    x, w, x_n, w_n, _, _, _ = inputs(rng, x_shape, w_shape, "fp16", geometry)
    bias16 = random_array(rng, w_shape[0]).astype(np.float16)
    expected = ref.conv2d(x, w, bias16.astype(np.float64), **geometry)
    out32 = nhwc.forward(x_n, w_n, bias16, out_dtype=np.float32, executor=plain, **geometry)
    assert out32.dtype == np.float32
    assert_close(to_nchw(out32), expected, precision="fp16")
    out16 = nhwc.forward(x_n, w_n, bias16, executor=plain, **geometry)
    assert out16.dtype == np.float16
    assert_close(to_nchw(out16).astype(np.float64), expected, dtype=np.float32, precision="fp16")


def test_the_launcher_refuses_what_the_kernels_cannot_do(plain, rng):
    x, w = random_array(rng, (1, 5, 5, 8)), random_array(rng, (4, 3, 3, 8))
    with pytest.raises(ArgumentError, match="tensor cores"):
        nhwc.forward(x, w, executor=plain)  # float32 at "ieee": no NHWC kernel computes exact fp32
    with pytest.raises(ShapeError, match="channels"):
        nhwc.forward(x, random_array(rng, (4, 3, 3, 7)), precision="tf32", executor=plain)
    with pytest.raises(ShapeError, match="grad_y"):
        nhwc.dgrad(random_array(rng, (1, 5, 5, 4)), w, x.shape, precision="tf32", executor=plain)
    with pytest.raises(ArgumentError, match="config must be one of"):
        nhwc.forward(x, w, precision="tf32", config="256x256", executor=plain)
