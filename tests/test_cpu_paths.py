"""Every path of the CPU backend's tiled products against the float64 reference, and their determinism.

The convolution plans its forward pass three ways (dlgpu.cpu.conv2d.forward_plan: Winograd,
"rows" tiles along output rows, "pixels" tiles of pixels x channels) and its data gradient four
(the same on grad_y, or "fold": the unfolded gradient added back).  Each case below names the
plans it must take, so a change of heuristics that leaves a path untested fails here instead of
going unnoticed.  The shapes are odd on purpose: channel counts off the tiles' multiples, batch
1, stride, dilation, asymmetric padding, bands and chunks split across work items.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cpu import conv2d as cpu_conv2d
from dlgpu.cpu.gemm import computes_transposed
from dlgpu.testing import assert_close, random_array


# (id, x shape, weight shape, stride, padding, dilation, forward plan, data-gradient plan)
CONV_PATHS = [
    ("rows-dilated-batch1", (1, 3, 11, 13), (3, 3, 5, 3), 1, (2, 1), (1, 2), "rows", "rows"),
    ("pixels-strided", (2, 2, 9, 10), (20, 2, 3, 2), (2, 3), (1, 0), (2, 1), "pixels", "fold"),
    ("rows-three-bands", (1, 4, 150, 9), (5, 4, 3, 3), 1, 1, 1, "rows", "rows"),
    ("pixels-then-winograd", (2, 5, 12, 12), (16, 5, 3, 3), 1, 0, 1, "pixels", "winograd"),
    ("winograd-two-bands", (1, 16, 70, 9), (5, 16, 3, 3), 1, (0, 2), 1, "winograd", "pixels"),
    ("winograd-both", (2, 24, 20, 18), (33, 24, 3, 3), 1, 1, 1, "winograd", "winograd"),
    # too small an image for Winograd's 64-tile columns: the direct product
    ("winograd-shape-small-image", (2, 24, 7, 6), (33, 24, 3, 3), 1, 1, 1, "pixels", "fold"),
    # padding 1 with a 1x1 filter: a forward pixel's input may lie in the padding, outside grad_x
    ("pointwise-padded-strided", (3, 2, 8, 7), (4, 2, 1, 1), 2, 1, 1, "pixels", "fold"),
    # 33 images and 306 pixels: the weight gradient splits both across items and chunks, the fold
    # (3 images an item) leaves a short last item
    ("many-images", (33, 2, 20, 19), (6, 2, 3, 3), 1, 0, 1, "rows", "fold"),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_shape(x_shape, w_shape, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    p = (x_shape[2] + 2 * ph - dh * (w_shape[2] - 1) - 1) // sh + 1
    q = (x_shape[3] + 2 * pw - dw * (w_shape[3] - 1) - 1) // sw + 1
    return (x_shape[0], w_shape[0], p, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_PATHS, ids=[c[0] for c in CONV_PATHS])
def test_conv2d_path_matches_the_reference(rng, dtype, case):
    _, x_shape, w_shape, stride, padding, dilation, forward, data = case
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    y_shape = _out_shape(x_shape, w_shape, stride, padding, dilation)
    s, d = _pair(stride), _pair(dilation)
    assert cpu_conv2d.forward_plan(w_shape, y_shape, s, d, "ieee") == forward
    assert cpu_conv2d.data_gradient_plan(w_shape, x_shape, y_shape, s, d, "ieee") == data

    x = random_array(rng, x_shape, dtype)
    weight = random_array(rng, w_shape, dtype)
    bias = random_array(rng, w_shape[:1], dtype)
    y_ref = R.conv2d(x, weight, bias, activation="relu", **geometry)
    out = np.full(y_shape, np.nan, dtype)  # an element the kernel forgets stays NaN and fails
    y = F.conv2d(x, weight, bias, activation="relu", out=out, **geometry)
    assert_close(y, y_ref, dtype=dtype)

    grad_y = random_array(rng, y_shape, dtype)
    got = F.conv2d_backward(grad_y, x, weight, y=y, activation="relu", **geometry)
    ref = R.conv2d_backward(grad_y, x, weight, y=y_ref, activation="relu", **geometry)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == dtype
        assert_close(g, r, dtype=dtype)


def test_the_lenet_and_resnet_layers_take_the_fast_paths():
    plan = cpu_conv2d.forward_plan
    assert plan((6, 1, 5, 5), (64, 6, 24, 24), (1, 1), (1, 1), "ieee") == "rows"  # LeNet c1
    assert plan((16, 6, 5, 5), (64, 16, 10, 10), (1, 1), (1, 1), "ieee") == "pixels"  # LeNet c3
    assert plan((64, 64, 3, 3), (8, 64, 56, 56), (1, 1), (1, 1), "ieee") == "winograd"  # ResNet 3x3
    # Non-finite inputs and tensor-core precisions keep the direct product.
    assert plan((64, 64, 3, 3), (8, 64, 56, 56), (1, 1), (1, 1), "ieee", lambda: False) == "pixels"
    assert plan((64, 64, 3, 3), (8, 64, 56, 56), (1, 1), (1, 1), "tf32") == "pixels"
    data = cpu_conv2d.data_gradient_plan
    assert data((6, 1, 5, 5), (64, 1, 28, 28), (64, 6, 24, 24), (1, 1), (1, 1), "ieee") == "fold"
    assert data((16, 6, 5, 5), (64, 6, 14, 14), (64, 16, 10, 10), (1, 1), (1, 1), "ieee") == "fold"
    assert data((64, 64, 3, 3), (8, 64, 56, 56), (8, 64, 56, 56), (1, 1), (1, 1), "ieee") == "winograd"


# (M, K, N): products computed as they stand and as their transpose (N too short for the vectors)
PRODUCTS = [(130, 7, 128, False), (200, 33, 3, True), (1, 5, 1, False), (67, 64, 2, True), (130, 9, 65, True)]


@pytest.mark.parametrize("m,k,n,transposed", PRODUCTS, ids=[f"{m}x{k}x{n}" for m, k, n, _ in PRODUCTS])
def test_matmul_orientation_matches_the_reference(rng, m, k, n, transposed):
    assert computes_transposed(m, n) == transposed
    for transpose_a in (False, True):
        a = random_array(rng, (k, m) if transpose_a else (m, k), np.float32)
        b = random_array(rng, (k, n), np.float32)
        assert_close(F.matmul(a, b, transpose_a=transpose_a), R.matmul(a, b, transpose_a=transpose_a),
                     dtype=np.float32)
    x = random_array(rng, (m, k), np.float32)
    w = random_array(rng, (n, k), np.float32)
    bias = random_array(rng, (n,), np.float32)
    assert_close(F.linear(x, w, bias, activation="relu"), R.linear(x, w, bias, activation="relu"),
                 dtype=np.float32)


def test_results_are_the_same_bits_with_one_thread_and_with_two(rng):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    x = random_array(rng, (5, 16, 13, 11), np.float32)
    weight = random_array(rng, (20, 16, 3, 3), np.float32)
    geometry = dict(padding=1, activation="relu")
    a = random_array(rng, (70, 45), np.float32)
    b = random_array(rng, (45, 66), np.float32)

    def run():
        y = F.conv2d(x, weight, **geometry)  # Winograd
        y_strided = F.conv2d(x, weight, stride=2, **geometry)  # the direct product
        grads = F.conv2d_backward(np.ones_like(y), x, weight, y=y, **geometry)
        grads_strided = F.conv2d_backward(np.ones_like(y_strided), x, weight, y=y_strided, stride=2, **geometry)
        product = F.matmul(a, b)
        return [y, y_strided, *grads, *grads_strided, product, *F.matmul_backward(np.ones_like(product), a, b)]

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(2)
        two = run()
    finally:
        numba.set_num_threads(before)
    for p, q in zip(one, two):
        assert p.tobytes() == q.tobytes()
